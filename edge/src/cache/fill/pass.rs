//! Passing through (see the module docs of [`super`]): the switch, and the room a passing fill
//! leaves its slowest reader.

use super::{FIRST_READER_WAIT, Fill, PASS_WINDOW};

impl Fill {
    /// Stops storing; what is still to be handed out stays in memory (module docs).
    pub(super) fn start_passing(&self, why: String) {
        let mut state = self.lock();
        if state.passing.is_none() {
            tracing::debug!(why = %why, "fill passes through without storing");
            state.passing = Some(why);
        }
    }

    /// Waits until no reader needs the oldest chunk held in memory, or every reader has
    /// gone (then `false`: there is no one to pass the body to). Before the first reader has
    /// come (the request that started the fill joins it just after it starts), it waits for
    /// one, but not for ever: a client that left at once has no one to pass the body to.
    pub(super) async fn make_room(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut rx = self.progress.subscribe();
        let first_reader_by = tokio::time::Instant::now() + FIRST_READER_WAIT;
        enum Next {
            Room(bool),
            AwaitFirstReader,
            AwaitProgress,
        }
        loop {
            rx.borrow_and_update();
            let next = {
                let mut state = self.lock();
                if state.positions.is_empty() {
                    if self.had_readers.load(Relaxed)
                        || tokio::time::Instant::now() >= first_reader_by
                    {
                        Next::Room(false)
                    } else {
                        Next::AwaitFirstReader
                    }
                } else if state.passed.len() < PASS_WINDOW {
                    Next::Room(true)
                } else {
                    let slowest = state.positions.values().copied().min().unwrap_or(u64::MAX);
                    let (index, _) = state.passed[0];
                    let end = state
                        .chunks
                        .get(index + 1)
                        .map_or(state.written, |(start, _)| *start);
                    if slowest >= end {
                        state.passed.pop_front();
                        Next::Room(true)
                    } else {
                        Next::AwaitProgress
                    }
                }
            };
            match next {
                Next::Room(room) => return room,
                Next::AwaitFirstReader => {
                    let _ = tokio::time::timeout_at(first_reader_by, rx.changed()).await;
                }
                Next::AwaitProgress => {
                    if rx.changed().await.is_err() {
                        return false;
                    }
                }
            }
        }
    }
}
