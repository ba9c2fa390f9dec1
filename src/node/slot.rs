//! Keep-latest hand-over between the subscription (producer) and the inference thread
//! (consumer): one slot holding the newest frame. A frame that arrives while an older one
//! waits replaces it and counts as dropped, so the consumer never processes a stale image
//! and latency cannot grow when inference is slower than the camera.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A single-frame mailbox; `put` never blocks, `take` waits for a frame.
#[derive(Debug)]
pub struct LatestSlot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

#[derive(Debug)]
struct State<T> {
    frame: Option<T>,
    received: u64,
    dropped: u64,
    closed: bool,
}

/// Counters of a slot since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotCounts {
    /// Frames put into the slot.
    pub received: u64,
    /// Frames replaced by a newer one before the consumer took them.
    pub dropped: u64,
}

impl<T> Default for LatestSlot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> LatestSlot<T> {
    pub fn new() -> Self {
        LatestSlot {
            state: Mutex::new(State {
                frame: None,
                received: 0,
                dropped: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic elsewhere must not wedge the hand-over: the state stays consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `frame` as the newest; an older waiting frame is dropped (and counted). After
    /// [`Self::close`] frames are refused (not counted).
    pub fn put(&self, frame: T) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.received += 1;
        if state.frame.replace(frame).is_some() {
            state.dropped += 1;
        }
        drop(state);
        self.ready.notify_one();
    }

    /// The newest frame, waiting up to `timeout` for one. `None` on timeout or once the
    /// slot is closed.
    pub fn take(&self, timeout: Duration) -> Option<T> {
        let state = self.lock();
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| s.frame.is_none() && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        state.frame.take()
    }

    /// Shut-down: a frame still waiting is dropped (and counted), later `put`s are refused
    /// and `take` returns `None` at once, so the consumer finishes only the frame in hand.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        if state.frame.take().is_some() {
            state.dropped += 1;
        }
        drop(state);
        self.ready.notify_all();
    }

    /// Whether a frame waits to be taken.
    pub fn has_frame(&self) -> bool {
        self.lock().frame.is_some()
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub fn counts(&self) -> SlotCounts {
        let state = self.lock();
        SlotCounts {
            received: state.received,
            dropped: state.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn newest_frame_wins_and_drops_are_counted() {
        let slot = LatestSlot::new();
        slot.put(1);
        slot.put(2);
        slot.put(3);
        assert_eq!(slot.take(Duration::ZERO), Some(3));
        assert_eq!(slot.take(Duration::ZERO), None);
        assert_eq!(
            slot.counts(),
            SlotCounts {
                received: 3,
                dropped: 2
            }
        );
    }

    #[test]
    fn fast_producer_slow_consumer_never_processes_stale_frames() {
        // The producer puts frames 1..=N as fast as it can and publishes how far it got;
        // the consumer is slow. A frame the consumer takes must be at least as new as the
        // newest frame put before the take began (a queue would hand out old ones).
        let slot = Arc::new(LatestSlot::new());
        let produced = Arc::new(AtomicU64::new(0));
        let producer = {
            let (slot, produced) = (slot.clone(), produced.clone());
            thread::spawn(move || {
                for i in 1..=20_000u64 {
                    slot.put(i);
                    produced.store(i, Ordering::SeqCst);
                }
            })
        };
        let mut taken = Vec::new();
        while taken.last() != Some(&20_000) {
            let newest_before = produced.load(Ordering::SeqCst);
            let frame = slot
                .take(Duration::from_secs(5))
                .expect("the newest frame stays until taken");
            assert!(
                frame >= newest_before,
                "took {frame} although {newest_before} was already put"
            );
            if let Some(&last) = taken.last() {
                assert!(
                    frame > last,
                    "frame {frame} after {last}: repeated or out of order"
                );
            }
            taken.push(frame);
            thread::sleep(Duration::from_micros(200));
        }
        producer.join().unwrap();
        let counts = slot.counts();
        assert_eq!(counts.received, 20_000);
        // Every frame was either processed or counted as dropped, none twice.
        assert_eq!(counts.dropped + taken.len() as u64, 20_000);
        assert_eq!(
            *taken.last().unwrap(),
            20_000,
            "the newest frame is processed"
        );
        assert!(counts.dropped > 0, "a slow consumer must drop frames");
    }

    #[test]
    fn take_times_out_and_close_wakes_the_consumer() {
        let slot: Arc<LatestSlot<u8>> = Arc::new(LatestSlot::new());
        assert_eq!(slot.take(Duration::from_millis(20)), None);
        let waiter = {
            let slot = slot.clone();
            thread::spawn(move || slot.take(Duration::from_secs(60)))
        };
        thread::sleep(Duration::from_millis(20));
        slot.close();
        assert_eq!(waiter.join().unwrap(), None);
        assert!(slot.is_closed());
    }

    #[test]
    fn close_drops_the_waiting_frame_and_refuses_new_ones() {
        let slot = LatestSlot::new();
        slot.put(1);
        slot.close();
        slot.put(2);
        assert_eq!(slot.take(Duration::from_secs(60)), None);
        assert_eq!(
            slot.counts(),
            SlotCounts {
                received: 1,
                dropped: 1
            }
        );
    }
}
