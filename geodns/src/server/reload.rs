//! The config and databases, reloaded through [`shared::reload`]: a new [`State`] is built off
//! the query path and swapped in whole, with health checks restarted for the new POPs; a
//! failed reload leaves the running state as it was.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use shared::reload::{Reload, ReloadFuture};
use tokio::sync::Mutex;

use super::State;
use crate::config::GeoDnsConfig;
use crate::health::{Checker, Health};
use crate::metrics::Metrics;

/// The config and databases, reloaded through [`shared::reload`] (SIGHUP, a change of the
/// config or a database file, `POST /reload` on the admin listener).
pub(super) struct GeoReload {
    path: Option<PathBuf>,
    state: Arc<ArcSwap<State>>,
    health: Health,
    checker: Mutex<Checker>,
    metrics: Arc<Metrics>,
}

impl GeoReload {
    /// `path` is the config file reloads re-read; without one they rebuild from the running
    /// config (re-opening the databases).
    pub(super) fn new(
        path: Option<PathBuf>,
        state: Arc<ArcSwap<State>>,
        health: Health,
        checker: Checker,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            path,
            state,
            health,
            checker: Mutex::new(checker),
            metrics,
        }
    }

    async fn apply(&self, config: GeoDnsConfig) -> anyhow::Result<()> {
        // Built off the query path; queries keep using the old state until the swap.
        let next = tokio::task::spawn_blocking(move || State::build(config)).await??;
        let checker = Checker::start(&next.config.pops, &next.config.health, self.health.clone())?;
        let names: Vec<String> = next.config.pops.iter().map(|p| p.name.clone()).collect();
        self.health.rcu(|h| {
            let mut kept = (**h).clone();
            kept.down.retain(|name, _| names.contains(name));
            kept
        });
        self.state.store(Arc::new(next));
        *self.checker.lock().await = checker;
        Ok(())
    }
}

impl Reload for GeoReload {
    fn reload(&self) -> ReloadFuture<'_> {
        Box::pin(async move {
            let config = match &self.path {
                Some(path) => GeoDnsConfig::load(path),
                None => Ok(self.state.load().config.clone()),
            };
            let result = match config {
                Ok(config) => self.apply(config).await,
                Err(e) => Err(e.into()),
            };
            match &result {
                Ok(()) => self.metrics.reloads.inc(),
                Err(_) => self.metrics.reload_errors.inc(),
            };
            result.map(|()| "config and databases".to_owned())
        })
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        let state = self.state.load();
        self.path
            .iter()
            .chain(state.config.geoip.databases.iter())
            .cloned()
            .collect()
    }

    fn watch_interval(&self) -> Duration {
        self.state.load().config.geoip.watch_interval
    }
}
