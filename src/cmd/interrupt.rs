//! Ctrl-C, SIGTERM and SIGHUP (ctrlc's `termination` feature): one handler for the whole
//! process, installed by `main` before any command runs, so that every command ends with
//! exit code 130 when interrupted (README: exit codes), not 143 from SIGTERM's default.
//!
//! A command that stops cleanly at its next step (`infer` after the image in the work,
//! `bag process` closing a valid bag, `train` saving a checkpoint, `eval` reporting the
//! frames before) asks for the flag with
//! [`graceful`] and returns 130 itself; a second signal (a second after the first or later:
//! one interrupt may arrive twice) then ends it at once. Every other
//! command ends at once, as the signal's default would have ended it, with a line saying
//! so. A signal the process was started with ignored (`nohup`'s SIGHUP, SIGINT of a
//! script's background job) stays ignored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Exit code of an interrupted command (128 + SIGINT, what shells report for Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Set by the first signal once a command has asked to stop gracefully.
static STOP: AtomicBool = AtomicBool::new(false);
/// When that first signal came.
static FIRST: OnceLock<Instant> = OnceLock::new();
/// A signal this soon after the first is the same interrupt delivered twice (GNU timeout
/// signals the process and then its group), not a second Ctrl-C.
const REPEAT: Duration = Duration::from_secs(1);
/// Whether the running command stops by itself ([`graceful`]).
static GRACEFUL: AtomicBool = AtomicBool::new(false);

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Installs the handler. An error (no handler could be set) leaves the signals' defaults.
pub fn install() {
    let ignored: Vec<libc::c_int> = SIGNALS.into_iter().filter(|&s| is_ignored(s)).collect();
    // Held back while the handler replaces their disposition and SIG_IGN is put back, so
    // none of them reaches the handler meanwhile (a pending ignored signal is discarded).
    let held = mask(&ignored, libc::SIG_BLOCK);
    let installed = ctrlc::set_handler(|| {
        if GRACEFUL.load(Ordering::SeqCst) {
            if !STOP.swap(true, Ordering::SeqCst) {
                FIRST.set(Instant::now()).ok();
                say(b"interrupted: finishing the work in hand (interrupt again to stop at once)\n");
                return;
            }
            if FIRST.get().is_some_and(|first| first.elapsed() < REPEAT) {
                return;
            }
        }
        say(b"interrupted\n");
        // SAFETY: _exit(2) is async-signal-safe (and this runs on ctrlc's own thread
        // anyway); exiting here leaves nothing half-written that the signal's default
        // action would not have left.
        unsafe { libc::_exit(EXIT_INTERRUPTED.into()) };
    });
    if let Err(e) = installed {
        log::debug!("no signal handler: {e}");
    }
    for &signal in &ignored {
        // SAFETY: SIG_IGN is a valid disposition; ctrlc's thread only wakes on its own
        // handler, which this signal no longer reaches.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    if held {
        mask(&ignored, libc::SIG_UNBLOCK);
    }
}

/// Blocks or unblocks `signals` for this thread (`how`); whether it did.
fn mask(signals: &[libc::c_int], how: libc::c_int) -> bool {
    if signals.is_empty() {
        return false;
    }
    // SAFETY: a set built with sigemptyset/sigaddset from valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(how, &set, std::ptr::null_mut()) == 0
    }
}

/// The running command stops by itself when interrupted: from now on a first signal only
/// sets the returned flag, which the command reads between its steps.
pub fn graceful() -> &'static AtomicBool {
    GRACEFUL.store(true, Ordering::SeqCst);
    &STOP
}

fn is_ignored(signal: libc::c_int) -> bool {
    // SAFETY: a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

fn say(line: &[u8]) {
    // SAFETY: write(2) on stderr of a valid buffer; a failed write is of no consequence.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}
