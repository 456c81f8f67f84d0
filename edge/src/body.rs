//! The body type every layer of the edge speaks.
//!
//! Front-ends convert their protocol's body into [`Body`] and back; the service, the cache and
//! the origin client only ever see this type, so a new front-end (HTTP/3) plugs in without
//! touching them.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full};

/// A boxed error that crosses layers (client, origin, store).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming HTTP body. `Unsync` because fills and origin streams are `Send` but need not be
/// `Sync`, and hyper only asks for `Send`.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body from bytes already in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose errors convert into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}
