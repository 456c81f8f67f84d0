//! [`Local`] for the edge: its cache's purge, its pre-warm, its health and suspect mark.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Local, Prewarm, Prewarmed, Purge, Purged};
use crate::config::PrewarmConfig;
use crate::prewarm::Prewarmer;
use crate::service::Service;

/// The edge as the control plane drives it.
pub(crate) struct EdgeLocal {
    service: Arc<Service>,
    prewarmer: Prewarmer,
}

impl EdgeLocal {
    pub(crate) fn new(service: Arc<Service>, settings: PrewarmConfig) -> Self {
        let prewarmer = Prewarmer {
            service: service.clone(),
            settings,
        };
        Self { service, prewarmer }
    }
}

impl Local for EdgeLocal {
    fn purge<'a>(&'a self, purge: &'a Purge) -> BoxFuture<'a, Purged> {
        Box::pin(self.service.purge(purge))
    }

    fn prewarm<'a>(&'a self, prewarm: &'a Prewarm) -> BoxFuture<'a, Prewarmed> {
        Box::pin(self.prewarmer.warm_all(prewarm))
    }

    fn set_cache_suspect(&self, suspect: bool) {
        self.service.set_cache_suspect(suspect);
        let note = suspect.then(|| {
            "catching up with the control bus: every cache hit revalidates with the origin until it has".to_owned()
        });
        self.service.set_degraded("control-catch-up", note);
    }

    fn set_bus_connected(&self, connected: bool) {
        let note = (!connected).then(|| {
            "control bus (NATS) unreachable: serving from the cache; purges from other POPs arrive when it reconnects".to_owned()
        });
        self.service.set_degraded("control", note);
    }
}
