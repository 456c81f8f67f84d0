//! One reload mechanism for every binary: SIGHUP, a change of a watched file, and an explicit
//! request (the admin listener's `POST /reload`, which `edge reload` sends) all run the same
//! [`Reload::reload`], one at a time. A reload that fails leaves the running state as it was
//! and says why; the binary decides what its state is and how it is swapped (arc-swap).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, watch};

/// A boxed future, as [`Reload::reload`] returns it (the trait stays object-safe).
pub type ReloadFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<String>> + Send + 'a>>;

/// What a binary reloads.
pub trait Reload: Send + Sync + 'static {
    /// Re-reads its config (and whatever else it loads) and swaps it in. On success, a short
    /// summary for the log and the admin answer (e.g. keys that still need a restart); on
    /// error, the running state must be unchanged.
    fn reload(&self) -> ReloadFuture<'_>;

    /// Files whose change triggers a reload (checked every watch interval).
    fn watched_files(&self) -> Vec<PathBuf>;

    /// How often the watched files are checked; zero turns file watching off (SIGHUP and
    /// explicit requests still reload). Read after every check, so a reload can change it.
    fn watch_interval(&self) -> Duration;
}

/// What started a reload, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChange,
    Request,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "SIGHUP",
            Self::FileChange => "file change",
            Self::Request => "reload request",
        }
    }
}

/// Runs reloads one at a time and logs each outcome.
pub struct Reloader {
    target: Arc<dyn Reload>,
    serial: Mutex<()>,
}

impl Reloader {
    pub fn new(target: Arc<dyn Reload>) -> Arc<Self> {
        Arc::new(Self {
            target,
            serial: Mutex::new(()),
        })
    }

    /// Reloads now (after any reload under way).
    pub async fn reload(&self, trigger: Trigger) -> anyhow::Result<String> {
        let _one_at_a_time = self.serial.lock().await;
        let result = self.target.reload().await;
        match &result {
            Ok(summary) => {
                tracing::info!(trigger = trigger.as_str(), %summary, "configuration reloaded")
            }
            Err(e) => tracing::error!(
                trigger = trigger.as_str(),
                error = %format!("{e:#}"),
                "reload rejected; the running configuration stays in use"
            ),
        }
        result
    }

    /// Reloads on SIGHUP and when a watched file changes, until `stop` turns true.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP");
                None
            }
        };
        let mut stamps = self.stamps();
        loop {
            let interval = self.target.watch_interval();
            let tick = async {
                match interval.is_zero() {
                    true => std::future::pending().await,
                    false => tokio::time::sleep(interval).await,
                }
            };
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let trigger = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                Some(()) = hangup => Trigger::Signal,
                () = tick => {
                    if self.stamps() == stamps {
                        continue;
                    }
                    Trigger::FileChange
                }
            };
            let _ = self.reload(trigger).await;
            // Whatever the outcome, this version of the files has been tried: a broken file
            // is not retried every interval, only when it changes again.
            stamps = self.stamps();
        }
    }

    /// Modification time, length and inode of each watched file: a file replaced by a rename
    /// (editors, config management) or rewritten within one mtime tick still shows a change.
    fn stamps(&self) -> Vec<Option<(SystemTime, u64, u64)>> {
        use std::os::unix::fs::MetadataExt as _;
        self.target
            .watched_files()
            .iter()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len(), m.ino()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        file: PathBuf,
        reloads: AtomicUsize,
    }

    impl Reload for Counting {
        fn reload(&self) -> ReloadFuture<'_> {
            Box::pin(async move {
                let text = std::fs::read_to_string(&self.file)?;
                anyhow::ensure!(!text.contains("broken"), "the file says broken");
                self.reloads.fetch_add(1, Ordering::SeqCst);
                Ok(text)
            })
        }
        fn watched_files(&self) -> Vec<PathBuf> {
            vec![self.file.clone()]
        }
        fn watch_interval(&self) -> Duration {
            Duration::from_millis(20)
        }
    }

    async fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn a_changed_file_reloads_once_and_a_broken_one_is_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        std::fs::write(&file, "one").unwrap();
        let target = Arc::new(Counting {
            file: file.clone(),
            reloads: AtomicUsize::new(0),
        });
        let reloader = Reloader::new(target.clone());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(reloader.clone().watch(stopped));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            target.reloads.load(Ordering::SeqCst),
            0,
            "no change, no reload"
        );
        std::fs::write(&file, "two, longer").unwrap();
        eventually("the change", || target.reloads.load(Ordering::SeqCst) == 1).await;
        std::fs::write(&file, "broken").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(target.reloads.load(Ordering::SeqCst), 1);
        assert!(reloader.reload(Trigger::Request).await.is_err());
        // Replaced by a rename, as editors do.
        let next = dir.path().join("config.new");
        std::fs::write(&next, "three").unwrap();
        std::fs::rename(&next, &file).unwrap();
        eventually("the rename", || target.reloads.load(Ordering::SeqCst) == 2).await;
        assert_eq!(reloader.reload(Trigger::Request).await.unwrap(), "three");
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
