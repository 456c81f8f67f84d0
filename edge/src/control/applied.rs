//! The commands this POP has applied (or is applying) lately, by id, so that a purge that
//! reaches it twice, by the fast path and by the stream, is applied once: a second apply
//! would drop what was fetched since the first.
//!
//! Bounded: the newest [`KEPT`] ids are remembered, older ones forgotten. An id is needed
//! only from its first apply until the other path brings it too, and live the stream
//! trails the fast path by its quorum write and consumer delivery (well under a second
//! across the testnet's world). [`KEPT`] is 16 s of the bench's sustained 1,000 purges per
//! second, so only a catch-up longer than that (a POP replaying a backlog while live purges
//! arrive by the fast path) can outrun it; a forgotten id costs a second apply, that is a
//! few extra misses, never a purge not applied.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::watch;

use super::Ack;

/// Ids remembered (each about 300 bytes with its acknowledgement: some 5 MB at most).
pub(super) const KEPT: usize = 16384;

/// Recently applied command ids, each with its acknowledgement once applied.
pub(super) struct Applied {
    inner: Mutex<Inner>,
    kept: usize,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, watch::Receiver<Option<Ack>>>,
    /// Oldest first: the order they are forgotten in.
    order: VecDeque<String>,
}

/// What [`Applied::claim`] found.
pub(super) enum Claim {
    /// First sight: the caller applies it, then calls [`Applying::done`].
    First(Applying),
    /// Applied, or being applied, by the other path: its acknowledgement once it is.
    Taken(watch::Receiver<Option<Ack>>),
}

/// The claim on a command being applied. Dropped without [`Applying::done`] (the apply was
/// cut off by a shutdown), the command counts as not applied.
pub(super) struct Applying {
    tx: watch::Sender<Option<Ack>>,
}

impl Applying {
    pub(super) fn done(self, ack: &Ack) {
        self.tx.send_replace(Some(ack.clone()));
    }
}

impl Applied {
    pub(super) fn new(kept: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            kept: kept.max(1),
        }
    }

    /// Claims the command `id` for applying, unless it was claimed before (and that apply was
    /// not abandoned). Atomic: of two paths claiming at once, one applies.
    pub(super) fn claim(&self, id: &str) -> Claim {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = inner.by_id.get(id) {
            let abandoned = rx.borrow().is_none() && rx.has_changed().is_err();
            if !abandoned {
                return Claim::Taken(rx.clone());
            }
        } else {
            if inner.order.len() >= self.kept
                && let Some(oldest) = inner.order.pop_front()
            {
                inner.by_id.remove(&oldest);
            }
            inner.order.push_back(id.to_owned());
        }
        let (tx, rx) = watch::channel(None);
        inner.by_id.insert(id.to_owned(), rx);
        Claim::First(Applying { tx })
    }

    /// Ids remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Outcome;

    fn ack(id: &str) -> Ack {
        Ack {
            id: id.into(),
            pop: "p".into(),
            seq: 0,
            applied_ms: 1,
            outcome: Outcome::Skipped,
        }
    }

    #[tokio::test]
    async fn the_second_claim_waits_for_the_first_apply() {
        let applied = Applied::new(8);
        let Claim::First(applying) = applied.claim("a") else {
            panic!("first sight")
        };
        let Claim::Taken(mut rx) = applied.claim("a") else {
            panic!("taken while applying")
        };
        assert_eq!(*rx.borrow(), None);
        applying.done(&ack("a"));
        let got = rx.wait_for(|a| a.is_some()).await.unwrap().clone();
        assert_eq!(got, Some(ack("a")));
        assert!(matches!(applied.claim("a"), Claim::Taken(_)));
        assert!(matches!(applied.claim("b"), Claim::First(_)));
    }

    #[test]
    fn an_abandoned_apply_can_be_claimed_again() {
        let applied = Applied::new(8);
        let Claim::First(applying) = applied.claim("a") else {
            panic!("first sight")
        };
        drop(applying);
        assert!(matches!(applied.claim("a"), Claim::First(_)));
        assert_eq!(applied.len(), 1);
    }

    #[test]
    fn the_oldest_ids_are_forgotten_past_the_bound() {
        let applied = Applied::new(3);
        for id in ["a", "b", "c", "d"] {
            let Claim::First(applying) = applied.claim(id) else {
                panic!("{id}: first sight")
            };
            applying.done(&ack(id));
        }
        assert_eq!(applied.len(), 3);
        assert!(matches!(applied.claim("b"), Claim::Taken(_)));
        assert!(matches!(applied.claim("d"), Claim::Taken(_)));
        // Forgotten: a second apply, the price of bounded memory.
        assert!(matches!(applied.claim("a"), Claim::First(_)));
        assert_eq!(applied.len(), 3);
    }
}
