//! Live reload of the edge through [`shared::reload`]: the config is read again, checked, and
//! its sites, rules and origin settings are built into a new [`crate::service::State`] that
//! is swapped in whole. Requests under way finish on the state they started with; a config
//! that does not load is rejected with its reason and the running one stays.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use shared::reload::{Reload, ReloadFuture};

use crate::admin::Tokens;
use crate::config::{self, EdgeConfig, SiteConfig};
use crate::origin::OriginClient;
use crate::service::Service;

/// Where the config comes from: the file (watched for changes) and how the command line
/// adjusts it, so a reload sees what a restart would.
#[derive(Clone)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    load: Arc<dyn Fn() -> anyhow::Result<EdgeConfig> + Send + Sync>,
}

impl ConfigSource {
    pub fn new(
        path: Option<PathBuf>,
        load: impl Fn() -> anyhow::Result<EdgeConfig> + Send + Sync + 'static,
    ) -> Self {
        Self {
            path,
            load: Arc::new(load),
        }
    }
}

/// The edge as [`shared::reload`] reloads it.
pub(crate) struct EdgeReload {
    service: Arc<Service>,
    source: Option<ConfigSource>,
    /// The config in effect: what the edge started with, plus what reloads applied.
    running: Mutex<EdgeConfig>,
    /// The built-in demo origin's site, when the edge started without sites (a reload that
    /// still has none keeps serving it).
    demo: Option<SiteConfig>,
    /// The admin API's tokens (`[admin]`), read again (token files too) by every reload so
    /// that a token rotates without a restart.
    tokens: ArcSwap<Tokens>,
}

impl EdgeReload {
    /// Fails if a token file cannot be read.
    pub(crate) fn new(
        service: Arc<Service>,
        source: Option<ConfigSource>,
        running: EdgeConfig,
        demo: Option<SiteConfig>,
    ) -> anyhow::Result<Self> {
        let tokens = Tokens::load(&running.admin)?;
        Ok(Self {
            service,
            source,
            running: Mutex::new(running),
            demo,
            tokens: ArcSwap::from_pointee(tokens),
        })
    }

    /// The admin API's tokens in effect.
    pub(crate) fn tokens(&self) -> Arc<Tokens> {
        self.tokens.load_full()
    }

    /// The config in effect.
    pub(crate) fn running(&self) -> EdgeConfig {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn apply(&self) -> anyhow::Result<String> {
        let Some(source) = &self.source else {
            anyhow::bail!("this edge was not started from a config source; nothing to re-read");
        };
        let mut new = (source.load)()?;
        new.validate()?;
        if new.sites.is_empty() {
            match &self.demo {
                Some(demo) => new.sites.push(demo.clone()),
                None => anyhow::bail!(
                    "the new config has no [[site]]: the demo origin starts only with the edge"
                ),
            }
        }
        let origin = OriginClient::new(&new.origin)?;
        let tokens = Tokens::load(&new.admin)?;
        let running = self.running();
        let restart = config::restart_needed(&running, &new);
        // Under the running name: a new `name` needs a restart, and the cluster finds this
        // node in its peers by name.
        let cluster = crate::upstream::cluster::Cluster::new(
            &running.reloaded_with(&new),
            &origin,
            self.service.metrics(),
        )?;
        let state = self
            .service
            .state_for(&new.sites, cluster, &origin, new.log.access_log)?;
        self.service.swap_state(state);
        self.tokens.store(Arc::new(tokens));
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = running.reloaded_with(&new);
        let mut summary = format!("{} site(s)", new.sites.len());
        if !restart.is_empty() {
            tracing::warn!(keys = %restart.join(", "), "changed keys need a restart to apply; they keep their running values");
            summary.push_str("; needs a restart to apply: ");
            summary.push_str(&restart.join(", "));
        }
        Ok(summary)
    }
}

impl Reload for EdgeReload {
    fn reload(&self) -> ReloadFuture<'_> {
        // Reading and building are quick and synchronous; the swap is one pointer store.
        Box::pin(async move { self.apply() })
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        self.source
            .as_ref()
            .and_then(|s| s.path.clone())
            .into_iter()
            .collect()
    }

    fn watch_interval(&self) -> Duration {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reload
            .watch_interval
    }
}
