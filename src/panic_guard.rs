//! Panics of the libraries we call with outside data — tch (how it reports a libtorch
//! exception) and mcap (arithmetic on a damaged file's length fields) — caught and handed
//! back as their message, without being printed: the caller turns it into its own error
//! and reports that once. Panics anywhere else print and unwind as before.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Whether this thread is inside [`catch_quietly`].
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`; a panic inside it comes back as `Err(message)` and is not printed.
pub fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    let outer = QUIET.with(|q| q.replace(true));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(outer));
    outcome.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_come_back_as_messages_and_nesting_keeps_the_outer_guard() {
        assert_eq!(catch_quietly(|| 3), Ok(3));
        let caught = catch_quietly(|| {
            let inner = catch_quietly(|| -> u8 { panic!("inner {}", 1) });
            assert_eq!(inner, Err("inner 1".to_owned()));
            // Still guarded after the inner guard ended.
            assert!(QUIET.with(|q| q.get()));
            panic!("outer")
        });
        assert_eq!(caught, Err::<(), _>("outer".to_owned()));
        assert!(!QUIET.with(|q| q.get()));
    }
}
