//! Anti-replay window over transport counters (RFC 6479 style bitmap, 2048 counters wide).
//!
//! A counter is accepted once, if it is newer than every counter seen, or within the window
//! behind the newest and not seen before. Reordering by up to 2047 packets is tolerated.

/// Width of the window in counters.
pub const WINDOW: u64 = 2048;
const WORDS: usize = (WINDOW / 64) as usize;

/// The window state.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// One more than the highest accepted counter (0: none yet).
    top: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            top: 0,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Whether `counter` would be accepted; changes nothing (checked before the expensive decrypt).
    pub fn check(&self, counter: u64) -> bool {
        if counter >= self.top {
            return counter != u64::MAX;
        }
        if self.top - counter > WINDOW {
            return false;
        }
        let (w, b) = Self::slot(counter);
        self.bits[w] & (1 << b) == 0
    }

    /// Marks `counter` as seen if acceptable; returns whether it was (call after authentication).
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.top {
            let advance = counter + 1 - self.top;
            if advance >= WINDOW {
                self.bits = [0; WORDS];
            } else {
                // Clear the slots of the counters we skip over (and the new one's).
                for c in self.top..=counter {
                    let (w, b) = Self::slot(c);
                    self.bits[w] &= !(1 << b);
                }
            }
            self.top = counter + 1;
        }
        let (w, b) = Self::slot(counter);
        self.bits[w] |= 1 << b;
        true
    }

    fn slot(counter: u64) -> (usize, u32) {
        let i = counter % WINDOW;
        ((i / 64) as usize, (i % 64) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_duplicates_and_reordering() {
        let mut w = ReplayWindow::default();
        assert!(w.update(0));
        assert!(!w.update(0), "duplicate");
        assert!(w.update(5));
        assert!(w.update(3), "late but inside the window");
        assert!(!w.update(3));
        assert!(w.update(5 + WINDOW - 1));
        assert!(!w.update(5), "seen");
        assert!(w.update(6), "exactly at the window's far edge and unseen");
        assert!(!w.update(4), "now behind the window");
        assert!(w.update(100_000), "a jump clears the window");
        assert!(!w.update(100_000 - WINDOW));
        assert!(w.update(100_000 - WINDOW + 1));
        assert!(!w.update(u64::MAX), "the last counter is never used");
    }

    proptest! {
        /// Against a model that remembers every counter: accept exactly the unseen ones within the
        /// window of the highest seen.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(0u64..6000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            for c in ops {
                let top = seen.iter().next_back().map_or(0, |m| m + 1);
                let want = !seen.contains(&c) && (c >= top || top - c <= WINDOW);
                prop_assert_eq!(w.update(c), want, "counter {}", c);
                if want {
                    seen.insert(c);
                }
            }
        }
    }
}
