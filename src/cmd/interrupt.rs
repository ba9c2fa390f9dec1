//! Ctrl-C, SIGTERM and SIGHUP (ctrlc's `termination` feature): one handler for the whole
//! process, installed by `main` before any command runs, so that every command ends with
//! exit code 130 when interrupted (README: exit codes), not 143 from SIGTERM's default.
//!
//! A command that stops cleanly at its next step (`infer` after the image in the work,
//! `bag process` closing a valid bag, `train` saving a checkpoint) asks for the flag with
//! [`graceful`] and returns 130 itself; every other command ends at once, as the signal's
//! default would have ended it, with a line saying so.

use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code of an interrupted command (128 + SIGINT, what shells report for Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Set by a signal once a command has asked to stop gracefully.
static STOP: AtomicBool = AtomicBool::new(false);
/// Whether the running command stops by itself ([`graceful`]).
static GRACEFUL: AtomicBool = AtomicBool::new(false);

/// Installs the handler. An error (a handler already set) leaves the signals' defaults.
pub fn install() {
    let installed = ctrlc::set_handler(|| {
        if GRACEFUL.load(Ordering::SeqCst) {
            STOP.store(true, Ordering::SeqCst);
        } else {
            const LINE: &[u8] = b"interrupted\n";
            // SAFETY: write(2) and _exit(2) are async-signal-safe, and this runs on
            // ctrlc's own thread anyway; nothing is left half-written by exiting here that
            // the signal's default action would not have left.
            unsafe {
                libc::write(2, LINE.as_ptr().cast(), LINE.len());
                libc::_exit(EXIT_INTERRUPTED.into());
            }
        }
    });
    if let Err(e) = installed {
        log::debug!("no signal handler: {e}");
    }
}

/// The running command stops by itself when interrupted: from now on a signal only sets
/// the returned flag, which the command reads between its steps.
pub fn graceful() -> &'static AtomicBool {
    GRACEFUL.store(true, Ordering::SeqCst);
    &STOP
}
