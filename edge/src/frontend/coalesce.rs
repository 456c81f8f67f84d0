//! Write coalescing under TLS for HTTP/2 connections.
//!
//! hyper runs each HTTP/2 stream as its own task, and the connection task writes and flushes
//! whatever frames are ready each time it runs. Under load the streams of one connection
//! finish one after another, so without help every small response becomes its own TLS record
//! and its own `writev` (on loopback the sender also pays for the receiver's TCP processing).
//!
//! [`Coalesce`] sits between rustls and the socket. Small writes are buffered; the first
//! flush of a batch yields once to the scheduler (the task wakes itself and returns
//! `Pending`), so that stream tasks already queued can add their responses, and the flush
//! that follows writes the whole batch with one syscall. A batch of 16 KiB or more is written
//! at once. The delay is one scheduler pass; an
//! idle runtime polls the connection again at once. Large writes go straight through once
//! the buffer is drained, so bulk bodies are not copied an extra time.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes at least this large bypass the buffer when it is empty.
const DIRECT: usize = 16 * 1024;
/// The buffer is written out before it grows past this.
const LIMIT: usize = 64 * 1024;

/// A socket with coalesced writes (see the module docs). Off until [`Coalesce::enable`]:
/// the TLS handshake and HTTP/1.1 (one response in flight per connection) gain nothing.
#[derive(Debug)]
pub(super) struct Coalesce<S> {
    inner: S,
    buf: BytesMut,
    enabled: bool,
    /// This batch has already yielded once; the next flush writes.
    yielded: bool,
}

impl<S> Coalesce<S> {
    pub(super) fn new(inner: S) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            enabled: false,
            yielded: false,
        }
    }

    pub(super) fn enable(&mut self) {
        self.enabled = true;
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out the whole buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.enabled {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        if this.buf.len() + data.len() > LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        if this.buf.is_empty() && data.len() >= DIRECT {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if !this.enabled {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        if this.buf.len() + total > LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        if this.buf.is_empty() && total >= DIRECT {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.buf.is_empty() && this.buf.len() < DIRECT && !this.yielded {
            // A small batch: let the streams queued behind this task add to it first. A large
            // one (bulk body data) gains nothing from waiting.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn small_writes_leave_in_one_batch_and_arrive_in_order() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut w = Coalesce::new(server);
        w.enable();
        let mut expected = Vec::new();
        for i in 0..100u8 {
            let chunk = vec![i; 300];
            w.write_all(&chunk).await.unwrap();
            expected.extend_from_slice(&chunk);
        }
        // Buffered, not yet written.
        assert_eq!(w.buf.len(), 30_000);
        w.flush().await.unwrap();
        assert!(w.buf.is_empty());
        let big = vec![7u8; 100_000];
        w.write_all(&big).await.unwrap();
        expected.extend_from_slice(&big);
        w.shutdown().await.unwrap();
        drop(w);
        let mut got = Vec::new();
        let mut client = client;
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn the_first_flush_of_a_batch_yields_once() {
        let (_client, server) = tokio::io::duplex(1 << 20);
        let mut w = Coalesce::new(server);
        w.enable();
        w.write_all(b"response").await.unwrap();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut w).poll_flush(&mut cx).is_pending());
        assert!(matches!(
            Pin::new(&mut w).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        // Nothing buffered, or a large batch: nothing to wait for.
        assert!(matches!(
            Pin::new(&mut w).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        w.write_all(&[1u8; 300]).await.unwrap();
        w.write_all(&[2u8; DIRECT]).await.unwrap();
        assert!(matches!(
            Pin::new(&mut w).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
    }
}
