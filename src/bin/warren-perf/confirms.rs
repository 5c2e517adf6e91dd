//! Tracks publisher confirms, which may arrive singly, out of order, or as
//! `multiple` acks covering a range.

use std::collections::VecDeque;

/// Marks of confirmed sequence numbers from `base` on.
#[derive(Debug)]
pub struct ConfirmTracker {
    /// Lowest sequence number not yet confirmed.
    base: u64,
    /// `marks[i]` says whether `base + i` is confirmed.
    marks: VecDeque<bool>,
}

impl Default for ConfirmTracker {
    fn default() -> Self {
        ConfirmTracker {
            base: 1,
            marks: VecDeque::new(),
        }
    }
}

impl ConfirmTracker {
    /// Record an ack or nack; returns how many sequence numbers it newly
    /// settled.
    pub fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        if tag < self.base {
            return 0;
        }
        let idx = (tag - self.base) as usize;
        if self.marks.len() <= idx {
            self.marks.resize(idx + 1, false);
        }
        let mut newly = 0;
        let from = if multiple { 0 } else { idx };
        for m in self.marks.range_mut(from..=idx) {
            if !*m {
                *m = true;
                newly += 1;
            }
        }
        while self.marks.front() == Some(&true) {
            self.marks.pop_front();
            self.base += 1;
        }
        newly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_multiple_and_out_of_order() {
        let mut t = ConfirmTracker::default();
        assert_eq!(t.settle(2, false), 1);
        assert_eq!(t.settle(1, false), 1);
        assert_eq!(t.settle(5, true), 3);
        assert_eq!(t.settle(5, true), 0);
        assert_eq!(t.settle(4, false), 0);
        assert_eq!(t.settle(7, false), 1);
        assert_eq!(t.settle(7, true), 1);
    }
}
