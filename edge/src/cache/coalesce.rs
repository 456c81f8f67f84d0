//! The coalescer: at most one fetch per key under way, whose outcome every request that asks
//! meanwhile shares. Whole-object flights and slice fetches both use it (with their own
//! outcome type), so the rules of joining, publishing and leaving are written once:
//!
//! - a request that finds a fetch under way waits for its outcome ([`Waiter`]);
//! - otherwise, unless the caller's check (made under the same lock) says the answer has
//!   landed in the store meanwhile, it becomes the [`Leader`], which publishes the outcome;
//! - the key leaves the map when its leader is dropped, after its last publish, so a
//!   request that arrives after that finds what the fetch stored instead of a finished fetch.
//!   A leader dropped without publishing (its task aborted) wakes its waiters with `None`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

type Map<T> = HashMap<String, (u64, watch::Receiver<Option<T>>)>;

/// Fetches under way, by key. Cheap to clone: clones share the map.
pub(super) struct Coalescer<T> {
    map: Arc<Mutex<Map<T>>>,
    /// Tells one leader of a key from a later one, so that a leader leaving removes only itself.
    next_id: Arc<AtomicU64>,
}

impl<T> Clone for Coalescer<T> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            next_id: self.next_id.clone(),
        }
    }
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
            next_id: Arc::default(),
        }
    }
}

/// What [`Coalescer::join_or_lead`] made of a request.
pub(super) enum Joined<T, S> {
    /// A fetch was under way: wait for its outcome.
    Waiting(Waiter<T>),
    /// None was: this request leads the new one (and can wait on it like any other).
    Leading(Leader<T>, Waiter<T>),
    /// None was, and the caller's check found the answer already landed.
    Settled(S),
}

impl<T: Clone> Coalescer<T> {
    /// Joins the fetch for `key`, or leads a new one unless `landed` (called under the lock,
    /// so no fetch can finish unseen between the two) finds the answer already there.
    pub(super) fn join_or_lead<S>(
        &self,
        key: &str,
        landed: impl FnOnce() -> Option<S>,
    ) -> Joined<T, S> {
        let mut map = self.lock();
        if let Some((_, rx)) = map.get(key) {
            return Joined::Waiting(Waiter(rx.clone()));
        }
        if let Some(settled) = landed() {
            return Joined::Settled(settled);
        }
        let (leader, rx) = self.insert(&mut map, key);
        Joined::Leading(leader, Waiter(rx))
    }

    /// Leads the fetch for `key` if none is under way (for a fetch that will produce the
    /// outcomes of several keys, as one full body holds every slice).
    pub(super) fn lead_if_vacant(&self, key: &str) -> Option<Leader<T>> {
        let mut map = self.lock();
        if map.contains_key(key) {
            return None;
        }
        Some(self.insert(&mut map, key).0)
    }

    /// Takes the fetches for which `fenced(key, outcome so far)` holds out of the map (a purge
    /// ran: a request from now on must start a fresh fetch); their waiters still get their
    /// outcome. Returns how many.
    pub(super) fn evict(&self, fenced: impl Fn(&str, Option<&T>) -> bool) -> u64 {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|key, (_, rx)| !fenced(key, rx.borrow().as_ref()));
        (before - map.len()) as u64
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The latest outcome published for `key`, while its fetch is under way.
    pub(super) fn peek(&self, key: &str) -> Option<T> {
        self.lock().get(key)?.1.borrow().clone()
    }

    fn insert(&self, map: &mut Map<T>, key: &str) -> (Leader<T>, watch::Receiver<Option<T>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_owned(), (id, rx.clone()));
        let leader = Leader {
            map: self.map.clone(),
            key: key.to_owned(),
            id,
            tx,
        };
        (leader, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map<T>> {
        // A panic while holding the lock leaves the map consistent (every change is one call).
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The request that makes the fetch for a key. Dropping it ends the fetch for the map.
pub(super) struct Leader<T> {
    map: Arc<Mutex<Map<T>>>,
    key: String,
    id: u64,
    tx: watch::Sender<Option<T>>,
}

impl<T> Leader<T> {
    /// Tells every waiter, present and future, the outcome (a later publish replaces it:
    /// a flight that landed a fill can still say the fill failed).
    pub(super) fn publish(&self, outcome: T) {
        self.tx.send_replace(Some(outcome));
    }
}

impl<T> Drop for Leader<T> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}

/// A request waiting for the outcome of a fetch it shares.
pub(super) struct Waiter<T>(watch::Receiver<Option<T>>);

impl<T: Clone> Waiter<T> {
    /// The outcome, or `None` when the leader left without publishing one.
    pub(super) async fn outcome(mut self) -> Option<T> {
        loop {
            if let Some(outcome) = self.0.borrow_and_update().clone() {
                return Some(outcome);
            }
            self.0.changed().await.ok()?;
        }
    }

    /// A waiter that already has its outcome (an answer that needed no fetch).
    pub(super) fn ready(outcome: T) -> Self {
        let (_tx, rx) = watch::channel(Some(outcome));
        Self(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_many_waiters_and_the_key_leaves_with_the_leader() {
        let c = Coalescer::<u32>::default();
        let Joined::Leading(leader, own) = c.join_or_lead("k", || None::<()>) else {
            panic!("first request must lead");
        };
        let Joined::Waiting(other) = c.join_or_lead("k", || Some(())) else {
            panic!("second request must wait, whatever the store says");
        };
        assert!(c.lead_if_vacant("k").is_none());
        leader.publish(7);
        assert_eq!(c.peek("k"), Some(7));
        drop(leader);
        assert_eq!(own.outcome().await, Some(7));
        assert_eq!(other.outcome().await, Some(7));
        assert!(c.peek("k").is_none(), "the key left with its leader");
        assert!(matches!(
            c.join_or_lead("k", || Some(1u8)),
            Joined::Settled(1)
        ));
    }

    #[tokio::test]
    async fn a_leader_gone_without_an_outcome_wakes_its_waiters_with_none() {
        let c = Coalescer::<u32>::default();
        let Joined::Leading(leader, own) = c.join_or_lead("k", || None::<()>) else {
            panic!("first request must lead");
        };
        let waiting = tokio::spawn(own.outcome());
        tokio::task::yield_now().await;
        drop(leader);
        assert_eq!(waiting.await.unwrap(), None);
    }

    #[test]
    fn a_finished_leader_does_not_remove_its_successor() {
        let c = Coalescer::<u32>::default();
        let first = c.lead_if_vacant("k").unwrap();
        // The first leader's entry is replaced only after it left; simulate the overlap a
        // late drop could cause by taking its slot by hand.
        c.lock().remove("k");
        let second = c.lead_if_vacant("k").unwrap();
        drop(first);
        assert!(
            c.lead_if_vacant("k").is_none(),
            "the second leader still holds the key"
        );
        drop(second);
        assert!(c.lead_if_vacant("k").is_some());
    }
}
