//! Protocol front-ends. Each accepts connections, converts requests to `http` types, calls
//! [`crate::service::Service::handle`], and streams the response back. Nothing about caching
//! lives here.

mod coalesce;
pub(crate) mod h3;
pub(crate) mod limits;
pub(crate) mod tcp;
