//! Background upkeep: the outbox gauges, the 5-minute attempt counts statistics read, the hub's
//! own events (`hub.*`), and retention pruning in bounded batches.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::model::{self, notice};
use crate::store::Store;

/// How often the outbox gauges are refreshed.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// How often retention runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// Events deleted per transaction, so pruning never holds long locks.
pub const PRUNE_BATCH: u32 = 1000;
/// How often finished 5-minute buckets are counted into the attempt figures.
pub const ROLLUP_INTERVAL: Duration = Duration::from_secs(60);
/// Buckets counted per transaction (six hours), so a first count of a long history commits in
/// steps and SQLite's writer is never held long.
pub const ROLLUP_BATCH: u32 = 72;

/// Refreshes the outbox gauges until shutdown.
pub async fn refresh_stats(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        let now = model::now();
        match store.outbox_stats(now).await {
            Ok(stats) => metrics.set_outbox(stats, now),
            Err(e) => tracing::debug!(error = %e, "outbox stats unavailable"),
        }
        tokio::select! {
            () = tokio::time::sleep(STATS_INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Deletes finished events (with their deliveries, attempts and dead letters) older than
/// `retention`, once shortly after start and then every [`PRUNE_INTERVAL`].
pub async fn prune(
    store: Arc<dyn Store>,
    retention: chrono::TimeDelta,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = PRUNE_INTERVAL;
        let mut total = 0u64;
        loop {
            let now = model::now();
            match store.prune(now - retention, now, PRUNE_BATCH).await {
                Ok(n) => {
                    total += n;
                    if n < u64::from(PRUNE_BATCH) || *shutdown.borrow() {
                        break;
                    }
                    // Let other writers in between batches.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention pruning failed; will try again");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(events = total, "pruned events past retention");
        }
    }
}

/// Counts finished buckets of attempts into the figures (`store/rollup.rs`), shortly after
/// start and then every [`ROLLUP_INTERVAL`], until shutdown.
pub async fn roll_up(store: Arc<dyn Store>, mut shutdown: watch::Receiver<bool>) {
    let mut wait = Duration::from_secs(5);
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = ROLLUP_INTERVAL;
        loop {
            match store.roll_up_attempts(model::now(), ROLLUP_BATCH).await {
                Ok(n) if n == ROLLUP_BATCH && !*shutdown.borrow() => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "counting attempt figures failed; will try again");
                    break;
                }
            }
        }
    }
}

/// How often the hub's notices are published as `hub.*` events.
pub const NOTICE_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes the hub's notices (`model/notice.rs`) as events every [`NOTICE_INTERVAL`], waking
/// the engine (here and on peers) when it did, until shutdown.
pub async fn publish_notices(
    store: Arc<dyn Store>,
    wake: Arc<tokio::sync::Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(NOTICE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
        let mut published = 0;
        loop {
            match store.publish_notices(notice::NOTICE_BATCH).await {
                Ok(n) => {
                    published += n;
                    if n < notice::NOTICE_BATCH || *shutdown.borrow() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publishing the hub's notices failed; will try again");
                    break;
                }
            }
        }
        if published > 0 {
            tracing::debug!(events = published, "published the hub's notices");
            wake.notify_one();
            store.announce_work().await;
        }
    }
}
