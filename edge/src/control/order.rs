//! Where a POP is in the stream, and what each delivery means for it: the stream's order is
//! the one order every POP applies, whatever JetStream redelivers or loses on a reconnect.
//!
//! JetStream redelivers a message whose acknowledgement it did not get (after `ack_wait`),
//! and after a reconnect the next pull gets the messages after the ones lost in flight
//! first. So a delivery is either one already applied (acknowledge it again, apply nothing)
//! or one further on; the commands between the last applied and it are read from the stream
//! directly and applied first.

use std::ops::Range;

/// The last stream sequence this POP applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Order {
    last: u64,
}

/// What to do with a delivered command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Applied before (a redelivery): acknowledge it again, apply nothing.
    Again,
    /// Apply it, after the stream's commands in `missing` (in order; those the stream no
    /// longer has are skipped).
    Apply { missing: Range<u64> },
}

impl Order {
    /// At `last`: the consumer's acknowledgement floor when the session starts.
    pub(super) fn new(last: u64) -> Self {
        Self { last }
    }

    pub(super) fn last(&self) -> u64 {
        self.last
    }

    /// What a delivery of `seq` means, the stream holding sequences from `first_kept` on.
    pub(super) fn step(&self, seq: u64, first_kept: u64) -> Step {
        if seq <= self.last {
            return Step::Again;
        }
        Step::Apply {
            missing: (self.last + 1).max(first_kept).min(seq)..seq,
        }
    }

    pub(super) fn applied(&mut self, seq: u64) {
        self.last = self.last.max(seq);
    }

    /// Whether commands after the last applied are gone from the stream (it holds
    /// sequences from `first_kept` on): they aged out, or the stream hit its limit, while
    /// this POP was away. It cannot know what they purged.
    pub(super) fn missed_expired(&self, first_kept: u64) -> bool {
        self.last + 1 < first_kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_in_order_redeliveries_and_gaps() {
        let order = Order::new(10);
        for (seq, first_kept, want) in [
            (11, 1, Step::Apply { missing: 11..11 }),
            (10, 1, Step::Again),
            (3, 1, Step::Again),
            // 11 and 12 were lost in flight on a reconnect: read them first.
            (13, 1, Step::Apply { missing: 11..13 }),
            // Some of them aged out of the stream: read only what it still has.
            (20, 15, Step::Apply { missing: 15..20 }),
            (20, 30, Step::Apply { missing: 20..20 }),
        ] {
            assert_eq!(order.step(seq, first_kept), want, "seq {seq}");
        }
    }

    #[test]
    fn applied_only_moves_forward() {
        let mut order = Order::new(5);
        order.applied(7);
        order.applied(6);
        assert_eq!(order.last(), 7);
        assert_eq!(order.step(7, 1), Step::Again);
    }

    #[test]
    fn a_gap_below_the_stream_start_is_a_miss() {
        // A new consumer on a fresh stream, or one that applied everything: nothing missed.
        assert!(!Order::new(0).missed_expired(0));
        assert!(!Order::new(0).missed_expired(1));
        assert!(!Order::new(100).missed_expired(101));
        // Commands 51..=99 aged out before this POP saw them.
        assert!(Order::new(50).missed_expired(100));
        assert!(Order::new(0).missed_expired(2));
    }
}
