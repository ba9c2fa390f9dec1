//! Warnings said once each: a doubt about a camera's calibration holds for every frame of
//! that camera, and a log line per frame would bury everything else.

use std::sync::Mutex;

/// The messages said so far. At most [`LogOnce::KEPT`]: messages that change with every
/// frame (a frame id or calibration that changes each time) would otherwise grow the list
/// without end, so beyond them nothing new is said.
#[derive(Debug, Default)]
pub struct LogOnce {
    said: Mutex<Vec<String>>,
}

impl LogOnce {
    pub const KEPT: usize = 16;

    pub const fn new() -> Self {
        LogOnce {
            said: Mutex::new(Vec::new()),
        }
    }

    /// Whether `message` is new (and from now on is not).
    pub fn is_new(&self, message: &str) -> bool {
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        let new = said.len() < Self::KEPT && !said.iter().any(|m| m == message);
        if new {
            said.push(message.to_owned());
        }
        new
    }

    /// Logs `message` as a warning if it is new.
    pub fn warn(&self, message: &str) {
        if self.is_new(message) {
            log::warn!("{message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_once_and_no_more_than_kept() {
        let once = LogOnce::new();
        assert!(once.is_new("a"));
        assert!(!once.is_new("a"));
        assert!(once.is_new("b"));
        for i in 2..LogOnce::KEPT {
            assert!(once.is_new(&i.to_string()));
        }
        assert!(!once.is_new("one more"));
        assert!(!once.is_new("b"));
    }
}
