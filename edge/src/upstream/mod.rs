//! Where a site's misses go: an [`Upstream`] bound to its site. The cache hands it the
//! request as the client made it (the normalised path and query as its URI, `Host` = the host it
//! was routed and keyed by, proxy headers added by the filter chain) and the cache key as a
//! request extension ([`UpstreamKey`]); the upstream decides where that goes. The origin
//! upstream maps it onto the site's origin URL; an origin group ([`group`]) tries several
//! of them; a parent tier is another upstream.

pub mod cluster;
pub mod group;
pub mod parent;

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::{Request, Response};

use crate::body::{self, Body};
use crate::cache::Upstream;
use crate::metrics::Metrics;
use crate::origin::{OriginClient, OriginError, OriginUrl};

/// The cache key of the object an upstream request is for (the primary key: scheme, host,
/// path and query), so an upstream can choose by object (a parent tier hashes on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamKey(pub Arc<str>);

/// A site's origin: the request's path under the origin URL's prefix, and the origin URL's
/// authority as `Host` unless the site forwards the client's.
pub struct OriginUpstream {
    pub origin: OriginUrl,
    pub forward_host: bool,
    /// `Host` sent whatever `forward_host` says (an origin group member's `host`).
    pub host: Option<HeaderValue>,
    pub client: OriginClient,
    pub metrics: Arc<Metrics>,
    /// What is on the other side; only a site's own origin counts as an origin request.
    pub tier: Tier,
    /// The site's token parameters, left out of the URI (a site's own origin only).
    pub token_params: Option<crate::rules::token::TokenParams>,
}

/// What an upstream connection leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// A site's own origin.
    Origin,
    /// Another edge, a parent cache of the site.
    Parent,
    /// Another node of this POP's cluster.
    Peer,
}

impl Tier {
    /// The `tier` label of its metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::Parent => "parent",
            Self::Peer => "peer",
        }
    }
}

/// A site's upstream: its origin, or its origin group.
pub fn for_site(
    config: &crate::config::SiteConfig,
    url: &OriginUrl,
    client: &OriginClient,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn Upstream>, crate::origin::OriginUrlError> {
    let origin = |url: OriginUrl, host: Option<&str>, client: OriginClient, tier| {
        let mut upstream = OriginUpstream::new(
            url,
            // A parent is an edge serving the same site: it gets the client's Host.
            config.forward_host || tier != Tier::Origin,
            host.and_then(|h| HeaderValue::from_str(h).ok()),
            &client,
            metrics,
            tier,
        );
        // An origin does not need a site's signatures; a parent checks them again.
        if tier == Tier::Origin {
            upstream.token_params = crate::rules::token::TokenParams::of(&config.token);
        }
        upstream
    };
    let members = |list: &[group::GroupOrigin], tier| {
        list.iter()
            .map(|o| {
                let url = OriginUrl::parse(&o.url)?;
                let client = match o.connect_timeout {
                    Some(timeout) => client.with_connect_timeout(timeout),
                    None => client.clone(),
                };
                let upstream = origin(url, o.host.as_deref(), client, tier);
                Ok(group::Member::new(upstream, o))
            })
            .collect::<Result<Vec<_>, crate::origin::OriginUrlError>>()
    };
    let site_origin: Arc<dyn Upstream> = match config.origins.is_empty() {
        true => Arc::new(origin(url.clone(), None, client.clone(), Tier::Origin)),
        false => Arc::new(group::GroupUpstream::new(
            members(&config.origins, Tier::Origin)?,
            config.origin_health.clone(),
            config.balance,
            metrics.ejections(Tier::Origin.as_str()),
        )),
    };
    if config.parents.is_empty() {
        return Ok(site_origin);
    }
    let parents = group::GroupUpstream::new(
        members(&config.parents, Tier::Parent)?,
        config.origin_health.clone(),
        config.parent_balance,
        metrics.ejections(Tier::Parent.as_str()),
    );
    Ok(Arc::new(parent::TieredUpstream {
        parents: Arc::new(parents),
        origin: site_origin,
        fallback: config.fallback,
        retry_on: config
            .origin_health
            .retry_on
            .iter()
            .filter_map(|c| http::StatusCode::from_u16(*c).ok())
            .collect(),
        metrics: metrics.clone(),
    }))
}

impl OriginUpstream {
    /// An upstream at `origin`. One sent another host than its own (`forward_host`, or a
    /// `host` of its own) connects through a client bound to `origin`'s address, since its
    /// request URIs name the host they are for (see [`Self::rewrite`]).
    pub fn new(
        origin: OriginUrl,
        forward_host: bool,
        host: Option<HeaderValue>,
        client: &OriginClient,
        metrics: &Arc<Metrics>,
        tier: Tier,
    ) -> Self {
        let client = match forward_host || host.is_some() {
            true => client.to_destination(&origin),
            false => client.clone(),
        };
        Self {
            origin,
            forward_host,
            host,
            client,
            metrics: metrics.clone(),
            tier,
            token_params: None,
        }
    }

    /// The request as it leaves for the origin: the path under the origin's prefix, and the
    /// host it is sent as both in `Host` and in the URI's authority, which HTTP/2 sends as
    /// `:authority` (RFC 9113 8.3.1: the two must agree, and a parent edge refuses a request
    /// where they do not). The connection goes to the origin's address either way.
    fn rewrite(&self, req: &mut Request<Body>) -> Result<(), OriginError> {
        if let Some(host) = &self.host {
            req.headers_mut().insert(header::HOST, host.clone());
        } else if !self.forward_host {
            let host = HeaderValue::from_str(self.origin.authority.as_str())
                .map_err(|e| OriginError::Request(format!("origin authority as Host: {e}")))?;
            req.headers_mut().insert(header::HOST, host);
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let path = match &self.token_params {
            Some(params) => params.strip(path),
            None => std::borrow::Cow::Borrowed(path),
        };
        let mut uri = self
            .origin
            .join(&path)
            .map_err(|e| OriginError::Request(format!("cannot map {path:?} to the origin: {e}")))?;
        // A request without Host (a health probe) keeps the origin's authority.
        if (self.forward_host || self.host.is_some())
            && let Some(sent) = req.headers().get(header::HOST)
        {
            let authority = http::uri::Authority::try_from(sent.as_bytes())
                .map_err(|e| OriginError::Request(format!("Host {sent:?} as authority: {e}")))?;
            let mut parts = uri.into_parts();
            parts.authority = Some(authority);
            uri = http::Uri::from_parts(parts)
                .map_err(|e| OriginError::Request(format!("upstream URI: {e}")))?;
        }
        *req.uri_mut() = uri;
        Ok(())
    }
}

impl Upstream for OriginUpstream {
    fn fetch(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, OriginError>> {
        self.fetch_within(req, None)
    }
}

impl OriginUpstream {
    /// [`Upstream::fetch`] with this origin's own first-byte timeout, if any.
    pub fn fetch_within(
        &self,
        mut req: Request<Body>,
        first_byte_timeout: Option<std::time::Duration>,
    ) -> BoxFuture<'static, Result<Response<Body>, OriginError>> {
        let rewritten = self.rewrite(&mut req);
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let tier = self.tier;
        Box::pin(async move {
            rewritten?;
            if tier == Tier::Origin {
                metrics.origin_requests.inc();
            }
            let start = Instant::now();
            match client.send_within(req, first_byte_timeout).await {
                Ok(response) => {
                    metrics
                        .origin_latency
                        .observe(start.elapsed().as_secs_f64());
                    let counter = metrics.origin_bytes.clone();
                    Ok(response.map(|b| {
                        body::tap(b, move |t| {
                            if let body::Tapped::Data(n) = t {
                                counter.inc_by(n as u64);
                            }
                        })
                    }))
                }
                Err(e) => {
                    if e.is_origin_fault() {
                        metrics.origin_errors.inc();
                    }
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::{Store, StoreLimits};
    use crate::config::OriginConfig;

    async fn upstream(origin: &str, forward_host: bool) -> OriginUpstream {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits {
            disk_budget: 1 << 20,
            memory_budget: 1 << 20,
        };
        let store = Store::open(dir.path(), limits).await.unwrap();
        OriginUpstream::new(
            OriginUrl::parse(origin).unwrap(),
            forward_host,
            None,
            &OriginClient::new(&OriginConfig::default()).unwrap(),
            &Arc::new(Metrics::new(store)),
            Tier::Origin,
        )
    }

    fn client_request(target: &str, host: &str) -> Request<Body> {
        Request::builder()
            .uri(target)
            .header(header::HOST, host)
            .body(body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn the_target_goes_under_the_origin_prefix_with_the_origins_host() {
        let mut req = client_request("/a/b.mp4?x=1", "cdn.example.com");
        let media = upstream("http://10.0.0.20:8080/media", false).await;
        media.rewrite(&mut req).unwrap();
        assert_eq!(req.uri(), "http://10.0.0.20:8080/media/a/b.mp4?x=1");
        assert_eq!(req.headers()[header::HOST], "10.0.0.20:8080");
        let mut req = client_request("/a", "cdn.example.com");
        let forwarding = upstream("https://origin.test", true).await;
        forwarding.rewrite(&mut req).unwrap();
        // The URI names the host it is for (HTTP/2's :authority agrees with Host).
        assert_eq!(req.uri(), "https://cdn.example.com/a");
        assert_eq!(req.headers()[header::HOST], "cdn.example.com");
        let mut probe = Request::get("/health").body(body::empty()).unwrap();
        forwarding.rewrite(&mut probe).unwrap();
        assert_eq!(probe.uri(), "https://origin.test/health");
        let mut v6 = client_request("/a", "[::1]:8443");
        forwarding.rewrite(&mut v6).unwrap();
        assert_eq!(v6.uri(), "https://[::1]:8443/a");
    }
}
