//! Whether another process of this machine still runs: temporary files and directories
//! carry their writer's PID, and those of a process that is gone (killed) are removed.

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
