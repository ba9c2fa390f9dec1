//! Whether another process of this machine still runs: temporary files and directories
//! carry their writer's PID and this machine's name, and those of a process of this
//! machine that is gone (killed) are removed. The name tells machines (and containers,
//! each with a PID namespace and a name of its own) sharing a folder apart, whose PIDs
//! say nothing about each other.

/// Whether no process with this PID exists on this machine (a PID of 0 or below never
/// counts as gone: it names no single process).
pub fn is_gone(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks whether the process exists.
    let missing = unsafe { libc::kill(pid, 0) } == -1;
    missing && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// This machine's name as temporary names carry it (`/` replaced; `host` if unknown).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length; the result is NUL-terminated
    // within it when the call succeeds and the name fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
        String::from_utf8_lossy(&buf[..end]).replace('/', "_")
    } else {
        String::new()
    };
    if name.is_empty() {
        "host".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_is_not_gone_and_an_exited_one_is() {
        assert!(!super::is_gone(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        assert!(super::is_gone(child.id() as i32));
        assert!(!super::is_gone(0) && !super::is_gone(-1));
    }
}
