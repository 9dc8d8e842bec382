//! Keeping the registry current: the connectors directory watched (notify), with a poll as the
//! safety net, each burst of changes ending in one rescan.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Connectors;

/// Quiet time after a change in the directory before it is rescanned (lets a copy finish).
pub const SETTLE: Duration = Duration::from_millis(200);
/// Rescan interval when no watcher could be set up, and as a safety net beside it.
pub const POLL: Duration = Duration::from_secs(5);
const POLL_WITHOUT_WATCHER: Duration = Duration::from_secs(1);

impl Connectors {
    /// Watches the directory until `stop`, rescanning after each burst of changes.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let watcher = {
            use notify::Watcher;
            let tx = tx.clone();
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    // A full channel already means "rescan"; nothing is lost by dropping this.
                    let _ = tx.try_send(());
                }
            })
            .and_then(|mut w| {
                w.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
                Ok(w)
            })
        };
        let poll = match &watcher {
            Ok(_) => POLL,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch the connectors directory; polling it every second instead");
                POLL_WITHOUT_WATCHER
            }
        };
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(()) = rx.recv() => {
                    // Let the burst (a copy in progress) settle, then rescan once.
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep(SETTLE) => break,
                            Some(()) = rx.recv() => {}
                        }
                    }
                }
                () = tokio::time::sleep(poll) => {}
            }
            if *stop.borrow() {
                break;
            }
            self.rescan().await;
        }
        drop(watcher);
    }
}
