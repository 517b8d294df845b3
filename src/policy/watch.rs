//! Live policy reload: on a change to the policy file and on demand (SIGHUP).
//!
//! Invariants:
//! - a new policy is applied only if it validates completely; otherwise the error is
//!   logged as `FILE:LINE:COL: message` lines, counted, and the old policy keeps serving;
//! - the swap is one atomic pointer store: a request sees the old policy or the new one,
//!   never a mix (requests hold an `Arc` snapshot across `.await`);
//! - the folder, not the file, is watched, so editors that write a new file and rename it
//!   over the old one, and Kubernetes' symlink swaps, are seen; events are debounced and a
//!   file whose bytes did not change is not reloaded.
//!
//! The signal itself is caught by `app`, which sends on the channel given to [`run`]:
//! this module knows no signals and no HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{Policy, PolicyError};
use crate::metrics;
use crate::report::Chain;

/// Events closer together than this are one change.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The file (or its folder) changed: reload if the bytes differ.
    FileChanged,
    /// An operator asked (SIGHUP): reload even if the bytes are the same.
    Signal,
}

/// Holds the live policy and what it was loaded from.
pub struct Reloader {
    path: PathBuf,
    live: Arc<ArcSwap<Policy>>,
    /// The bytes of the last attempt, applied or not, so one broken save is reported once.
    last_text: Option<String>,
    /// The config's named upstreams, which routes may name.
    upstreams: Vec<String>,
}

impl Reloader {
    /// `initial_text` is what the live policy was loaded from.
    pub fn new(path: PathBuf, live: Arc<ArcSwap<Policy>>, initial_text: Option<String>) -> Self {
        Self {
            path,
            live,
            last_text: initial_text,
            upstreams: Vec::new(),
        }
    }

    /// Reloads check routes' `upstream:` against these (the config's named upstreams).
    #[must_use]
    pub fn with_upstreams(mut self, names: Vec<String>) -> Self {
        self.upstreams = names;
        self
    }

    /// Reloads now. `Ok(true)`: a new policy is live; `Ok(false)`: nothing changed.
    pub fn reload(&mut self, trigger: Trigger) -> Result<bool, PolicyError> {
        let text = match Policy::read(&self.path) {
            Ok(t) => t,
            Err(e) => {
                // A file mid-replace may be briefly missing; the next event retries.
                metrics::policy_reload(false);
                return Err(e);
            }
        };
        if trigger == Trigger::FileChanged && self.last_text.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        let names: Vec<&str> = self.upstreams.iter().map(String::as_str).collect();
        let parsed = Policy::parse_for(&self.path, &text, &names);
        self.last_text = Some(text);
        match parsed {
            Ok(policy) => {
                self.live.store(Arc::new(policy));
                metrics::policy_reload(true);
                Ok(true)
            }
            Err(e) => {
                metrics::policy_reload(false);
                Err(e)
            }
        }
    }
}

/// Watches the policy's folder and applies changes until `requests` closes.
///
/// `requests` carries SIGHUP-style reload requests; file events are added here.
pub async fn run(
    mut reloader: Reloader,
    mut requests: mpsc::Receiver<Trigger>,
    events: mpsc::Sender<Trigger>,
) {
    let _watcher = match watch_folder(&reloader.path, events) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(file = %reloader.path.display(), error = %Chain(&e), "cannot watch the policy file; reload with SIGHUP");
            None
        }
    };
    while let Some(mut trigger) = requests.recv().await {
        // Debounce: let a burst of events (write, chmod, rename) settle into one reload.
        tokio::time::sleep(DEBOUNCE).await;
        while let Ok(more) = requests.try_recv() {
            if more == Trigger::Signal {
                trigger = Trigger::Signal;
            }
        }
        match reloader.reload(trigger) {
            Ok(true) => tracing::info!(
                file = %reloader.path.display(),
                summary = %reloader.live.load().summary(),
                "policy reloaded"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(
                file = %reloader.path.display(),
                error = %Chain(&e),
                "policy reload failed; the previous policy stays in force"
            ),
        }
    }
}

/// A watcher on the file's folder that sends [`Trigger::FileChanged`] for any event there.
fn watch_folder(
    file: &Path,
    events: mpsc::Sender<Trigger>,
) -> notify::Result<notify::RecommendedWatcher> {
    let folder = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // Full channel: a reload is already pending, which is all we need.
            let _ = events.try_send(Trigger::FileChanged);
        }
    })?;
    watcher.watch(&folder, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = "version: 1\nscopes:\n  a:read: A\nroutes:\n  - name: r\n    path: /r\n    scopes: [a:read]\n";

    #[test]
    fn a_broken_policy_keeps_the_old_one_and_a_fixed_one_applies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let live = Arc::new(ArcSwap::from_pointee(Policy::load(&path).unwrap()));
        let mut r = Reloader::new(path.clone(), Arc::clone(&live), Some(GOOD.to_owned()));
        assert!(
            !r.reload(Trigger::FileChanged).unwrap(),
            "unchanged bytes are not reloaded"
        );
        assert!(
            r.reload(Trigger::Signal).unwrap(),
            "a signal always reloads"
        );

        std::fs::write(&path, GOOD.replace("[a:read]", "[a:raed]")).unwrap();
        let before = Arc::as_ptr(&live.load_full());
        let err = r.reload(Trigger::FileChanged).unwrap_err().to_string();
        assert!(err.contains("policy.yaml:7:"), "{err}");
        assert_eq!(
            Arc::as_ptr(&live.load_full()),
            before,
            "the old policy stays"
        );

        std::fs::write(&path, GOOD.replace("/r\n", "/s\n")).unwrap();
        assert!(r.reload(Trigger::FileChanged).unwrap());
        assert!(live.load().to_json().to_string().contains("\"/s\""));
    }
}
