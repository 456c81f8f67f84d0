//! Memory that responses hold while their clients read: every chunk a response reads from
//! disk (or takes from a shared slice) for a client is counted against its connection and
//! against the whole edge until the last reference to it is dropped, which for HTTP/2 and
//! HTTP/3 is when the protocol layer has sent it.
//!
//! Without it a client that opens 100 streams with a zero flow-control window pins a whole
//! chunk per stream (the first chunk is read before the head to verify it): 12 such
//! connections held 3.4 GB. With it, a connection holds at most its share, further streams
//! wait before reading anything, and the connection's send timeout ends it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Chunks up to this size are not counted: the hot path of small objects pays nothing, and
/// 100 streams of them per connection are still small.
const UNCOUNTED: u64 = 16 * 1024;

/// The budgets one request's reads count against.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    connection: Arc<Semaphore>,
    total: Arc<Semaphore>,
    /// Largest single hold: half the connection's budget, so one stream can hold the chunk
    /// being sent and read the next.
    max_hold: u32,
}

/// The edge-wide budget, shared by every connection's [`ReadBudget`].
#[derive(Debug, Clone)]
pub(crate) struct TotalBudget(Arc<Semaphore>);

impl TotalBudget {
    pub(crate) fn new(bytes: u64) -> Self {
        Self(Arc::new(Semaphore::new(permits(bytes) as usize)))
    }

    /// A budget for one more connection.
    pub(crate) fn connection(&self, bytes: u64) -> ReadBudget {
        let bytes = permits(bytes);
        ReadBudget {
            connection: Arc::new(Semaphore::new(bytes as usize)),
            total: self.0.clone(),
            max_hold: (bytes / 2).max(1),
        }
    }
}

/// Permits are KiB, so that a u32 count covers any budget.
fn permits(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

struct Held {
    bytes: Bytes,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl ReadBudget {
    /// Waits for room for `len` bytes, then runs `read` and returns its bytes counted until
    /// their last reference is dropped. The connection's budget is taken first: a stream
    /// waiting for the edge-wide budget holds only its own connection's.
    pub async fn hold<E, F>(&self, len: u64, read: F) -> Result<Bytes, E>
    where
        F: Future<Output = Result<Bytes, E>>,
    {
        if len <= UNCOUNTED {
            return read.await;
        }
        let n = permits(len).min(self.max_hold);
        // Neither semaphore is ever closed.
        let (Ok(connection), Ok(total)) = (
            self.connection.clone().acquire_many_owned(n).await,
            self.total.clone().acquire_many_owned(n).await,
        ) else {
            return read.await;
        };
        let bytes = read.await?;
        Ok(Bytes::from_owner(Held {
            bytes,
            _permits: (connection, total),
        }))
    }

    /// A budget that never waits (tests, internal requests).
    pub fn unlimited() -> Self {
        TotalBudget::new(u64::MAX / 2).connection(u64::MAX / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_wait_for_room_and_release_when_dropped() {
        let total = TotalBudget::new(1 << 20);
        let conn = total.connection(256 * 1024);
        let chunk = || async { Ok::<_, ()>(Bytes::from(vec![1u8; 100 * 1024])) };
        let a = conn.hold(100 * 1024, chunk()).await.unwrap();
        let b = conn.hold(100 * 1024, chunk()).await.unwrap();
        // A third would exceed the connection's 256 KiB.
        let third = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            conn.hold(100 * 1024, chunk()),
        );
        assert!(third.await.is_err());
        let slice = a.slice(10..20);
        drop(a);
        assert!(
            tokio::time::timeout(
                std::time::Duration::from_millis(50),
                conn.hold(100 * 1024, chunk())
            )
            .await
            .is_err(),
            "a slice keeps the chunk counted"
        );
        drop(slice);
        let c = conn.hold(100 * 1024, chunk()).await.unwrap();
        assert_eq!(c.len(), 100 * 1024);
        // Small reads are not counted at all.
        assert!(
            conn.hold(1024, async { Ok::<_, ()>(Bytes::from_static(b"x")) })
                .await
                .is_ok()
        );
        drop((b, c));
        // Another connection has its own share of the total.
        let other = total.connection(256 * 1024);
        assert!(other.hold(100 * 1024, chunk()).await.is_ok());
    }
}
