//! Log throttling: one message per key per period, so a camera sending an unsupported
//! encoding at 30 Hz produces one warning every few seconds, not thirty a second.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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
}
