//! Log throttling: one message per key per period, so a camera sending an unsupported
//! encoding at 30 Hz produces one warning every few seconds, not thirty a second. Keys
//! come from the messages (an encoding, a format), so at most [`MAX_KEYS`] are kept
//! apart: a sender whose encoding changes with every message is throttled as one key, and
//! the map stays small.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Keys throttled on their own within one period; the others share one.
pub const MAX_KEYS: usize = 16;

/// The key shared by the keys over [`MAX_KEYS`].
const OTHERS: &str = "\0others";

#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    last: HashMap<String, Instant>,
}

impl Throttle {
    pub fn new(period: Duration) -> Self {
        Throttle {
            period,
            last: HashMap::new(),
        }
    }

    /// Whether a message with this key may be logged at `now` (and records it if so).
    pub fn allow(&mut self, key: &str, now: Instant) -> bool {
        let period = self.period;
        if !self.last.contains_key(key) && self.last.len() >= MAX_KEYS {
            // A key whose period is over would be allowed anyway: forgotten.
            self.last
                .retain(|_, &mut at| now.saturating_duration_since(at) < period);
        }
        let key = if self.last.contains_key(key) || self.last.len() < MAX_KEYS {
            key
        } else {
            OTHERS
        };
        match self.last.get(key) {
            Some(&at) if now.saturating_duration_since(at) < self.period => false,
            _ => {
                self.last.insert(key.to_owned(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_key_per_period() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(5));
        assert!(throttle.allow("nv12", t0));
        assert!(!throttle.allow("nv12", t0 + Duration::from_secs(1)));
        assert!(
            throttle.allow("yuv420", t0 + Duration::from_secs(1)),
            "keys are independent"
        );
        assert!(!throttle.allow("nv12", t0 + Duration::from_millis(4999)));
        assert!(throttle.allow("nv12", t0 + Duration::from_secs(5)));
    }

    /// A sender whose encoding changes with every message: a warning for each of the
    /// first keys, then one for all the others per period, and the map stays bounded.
    #[test]
    fn keys_over_the_limit_share_one_and_the_map_stays_bounded() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(5));
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let allowed = (0..1000)
            .filter(|i| throttle.allow(&format!("encoding x{i}"), at(*i)))
            .count();
        assert_eq!(allowed, MAX_KEYS + 1);
        assert!(throttle.last.len() <= MAX_KEYS + 1);
        // A key seen before keeps its own period.
        assert!(!throttle.allow("encoding x3", at(1000)));
        // After the period the old keys are forgotten and new ones get their own again.
        assert!(throttle.allow("nv12", at(7000)));
        assert!(throttle.allow("yuv420", at(7000)));
        assert!(throttle.last.len() <= MAX_KEYS + 1);
    }
}
