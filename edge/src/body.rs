//! The body type every layer of the edge speaks.
//!
//! Front-ends convert their protocol's body into [`Body`] and back; the service, the cache and
//! the origin client only ever see this type, so a new front-end (HTTP/3) plugs in without
//! touching them.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full};

/// A boxed error that crosses layers (client, origin, store).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming HTTP body. `Unsync` because fills and origin streams are `Send` but need not be
/// `Sync`, and hyper only asks for `Send`.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body from bytes already in memory.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose errors convert into [`BoxError`].
pub(crate) fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Waits for the first frame of `body` and returns a body that yields it again, followed by
/// the rest: a body that fails before its first byte is an error before any head is sent,
/// instead of a response that ends with nothing.
pub(crate) async fn primed(mut body: Body) -> Result<Body, BoxError> {
    if http_body::Body::is_end_stream(&body) {
        return Ok(body);
    }
    match body.frame().await {
        None => Ok(empty()),
        Some(Err(e)) => Err(e),
        Some(Ok(first)) => Ok(Primed {
            first: Some(first),
            rest: body,
        }
        .boxed_unsync()),
    }
}

pin_project_lite::pin_project! {
    struct Primed {
        first: Option<http_body::Frame<Bytes>>,
        #[pin]
        rest: Body,
    }
}

impl http_body::Body for Primed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(first) = this.first.take() {
            return std::task::Poll::Ready(Some(Ok(first)));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let rest = self.rest.size_hint();
        let first = self
            .first
            .as_ref()
            .and_then(|f| f.data_ref())
            .map_or(0, |b| b.len() as u64);
        let mut hint = http_body::SizeHint::new();
        // Upper first: `set_lower` checks against the upper bound already set.
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint.set_lower(rest.lower() + first);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn primed_bodies_replay_their_first_frame_or_fail_early() {
        let ok = futures_util::stream::iter([Ok::<_, BoxError>(http_body::Frame::data(
            Bytes::from_static(b"ab"),
        ))]);
        let body = boxed(http_body_util::StreamBody::new(ok));
        let replayed = primed(body).await.unwrap();
        assert_eq!(replayed.collect().await.unwrap().to_bytes(), "ab");
        let failing =
            futures_util::stream::iter([Err::<http_body::Frame<Bytes>, BoxError>("reset".into())]);
        let body = boxed(http_body_util::StreamBody::new(failing));
        assert!(primed(body).await.is_err());
    }
}

/// What [`tap`] reports of a body as it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tapped {
    /// A data frame of this many bytes.
    Data(usize),
    /// The body ended (all of it was read).
    End,
}

pin_project_lite::pin_project! {
    /// A body that reports its frames to `on` (see [`tap`]).
    pub struct Tap<F> {
        #[pin]
        inner: Body,
        on: F,
    }
}

impl<F: FnMut(Tapped)> http_body::Body for Tap<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    (this.on)(Tapped::Data(data.len()));
                }
            }
            std::task::Poll::Ready(None) => (this.on)(Tapped::End),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `inner`, reporting each data frame's size and its end to `on` (counters, access records:
/// whatever `on` owns is dropped with the body).
pub(crate) fn tap(inner: Body, on: impl FnMut(Tapped) + Send + 'static) -> Body {
    boxed(Tap { inner, on })
}
