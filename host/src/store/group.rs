//! Group commit: requests that arrive while the database is busy are written together, in one
//! transaction, by a few writer tasks.
//!
//! A commit costs a round trip per statement and a disk flush; under load, paying that once for
//! a group instead of once per request is what lets a publish or an attempt record keep up with
//! thousands per second. Nothing is traded for it: each caller gets its answer only after the
//! transaction holding its request committed, exactly as if it had written alone, and an idle
//! hub writes a lone request at once (a group is whatever queued up meanwhile, never a timer).
//!
//! Invariants:
//! - a group never holds more than `max_weight` units (events, records) plus one request;
//! - the queue is bounded: when it is full, callers wait (back-pressure, never unbounded memory);
//! - a failed group fails each of its requests with the same error, so none is half-written;
//!   callers decide whether to retry.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::{
    AttemptRecord, Backend, PublishOutcome, PublishRequest, Store, StoreError, StoreResult, now,
};

/// Requests waiting for a writer; beyond this, callers wait for room.
const QUEUE: usize = 4096;
/// Most events one publish group commits together (a batch request counts its events).
pub const MAX_PUBLISH_GROUP: usize = 2000;
/// Most attempt records written in one transaction.
pub const MAX_RECORD_GROUP: usize = 512;

/// The committer of the API's publishes ([`Store::publish_group`]).
pub fn publishes(store: Arc<dyn Store>) -> GroupCommit<PublishRequest, PublishOutcome> {
    GroupCommit::start(
        writers(store.backend()),
        MAX_PUBLISH_GROUP,
        |r: &PublishRequest| r.events.len(),
        move |requests| {
            let store = store.clone();
            async move { store.publish_group(requests, now()).await }
        },
    )
}

/// The committer of the engine's attempt records ([`Store::record_attempts`]).
pub fn attempt_records(store: Arc<dyn Store>) -> GroupCommit<AttemptRecord, bool> {
    GroupCommit::start(
        writers(store.backend()),
        MAX_RECORD_GROUP,
        |_| 1,
        move |records| {
            let store = store.clone();
            async move { store.record_attempts(records, now()).await }
        },
    )
}

/// Writer tasks per committer. SQLite has a single writer, so a second group would only queue
/// behind the first; PostgreSQL gains from a few groups in flight, whose commits share a flush.
fn writers(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 4,
    }
}

type Job<Req, Out> = (Req, oneshot::Sender<StoreResult<Out>>);

/// A group committer for requests of type `Req` answered with `Out`.
pub struct GroupCommit<Req, Out> {
    queue: mpsc::Sender<Job<Req, Out>>,
}

impl<Req, Out> std::fmt::Debug for GroupCommit<Req, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("waiting", &(QUEUE - self.queue.capacity()))
            .finish()
    }
}

impl<Req, Out> GroupCommit<Req, Out>
where
    Req: Send + 'static,
    Out: Send + 'static,
{
    /// Starts `writers` tasks. Each takes the next request and whatever else is queued, up to
    /// `max_weight` units as counted by `weight`, and hands the group to `write`, which answers
    /// one `Out` per request, in order. The tasks end when the last handle is dropped.
    pub fn start<W, F>(
        writers: usize,
        max_weight: usize,
        weight: fn(&Req) -> usize,
        write: W,
    ) -> Self
    where
        W: Fn(Vec<Req>) -> F + Send + Sync + 'static,
        F: Future<Output = StoreResult<Vec<Out>>> + Send + 'static,
    {
        let (queue, rx) = mpsc::channel::<Job<Req, Out>>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let write = Arc::new(write);
        for _ in 0..writers.max(1) {
            let (rx, write) = (rx.clone(), write.clone());
            tokio::spawn(async move {
                while let Some(jobs) = next_group(&rx, max_weight, weight).await {
                    let (requests, replies): (Vec<Req>, Vec<_>) = jobs.into_iter().unzip();
                    let count = requests.len();
                    match write(requests).await {
                        Ok(outs) if outs.len() == count => {
                            for (reply, out) in replies.into_iter().zip(outs) {
                                let _ = reply.send(Ok(out));
                            }
                        }
                        Ok(outs) => {
                            let e = Arc::new(StoreError::Corrupt(format!(
                                "a group of {count} requests was answered {} times",
                                outs.len()
                            )));
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::Shared(e.clone())));
                            }
                        }
                        Err(e) => {
                            let e = Arc::new(e);
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::Shared(e.clone())));
                            }
                        }
                    }
                }
            });
        }
        Self { queue }
    }

    /// Queues `request` and waits until the group holding it committed (or failed).
    pub async fn submit(&self, request: Req) -> StoreResult<Out> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((request, reply))
            .await
            .map_err(|_| StoreError::Corrupt("the group committer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Corrupt("the group committer dropped a request".into()))?
    }
}

/// Waits for one request, then takes what else is queued right now, up to `max_weight`.
async fn next_group<Req, Out>(
    rx: &Mutex<mpsc::Receiver<Job<Req, Out>>>,
    max_weight: usize,
    weight: fn(&Req) -> usize,
) -> Option<Vec<Job<Req, Out>>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut total = weight(&first.0);
    let mut jobs = vec![first];
    while total < max_weight {
        match rx.try_recv() {
            Ok(job) => {
                total += weight(&job.0);
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    Some(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn answers_each_request_in_order_and_groups_what_queued() {
        let groups = Arc::new(AtomicUsize::new(0));
        let seen = groups.clone();
        let committer = Arc::new(GroupCommit::start(
            1,
            100,
            |_: &u32| 1,
            move |reqs: Vec<u32>| {
                seen.fetch_add(1, Ordering::Relaxed);
                async move {
                    // Slow enough that the others queue up behind the first group.
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    Ok(reqs.into_iter().map(|r| r * 2).collect::<Vec<u32>>())
                }
            },
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50u32 {
            let c = committer.clone();
            tasks.spawn(async move { (i, c.submit(i).await.expect("committed")) });
        }
        while let Some(done) = tasks.join_next().await {
            let (i, out) = done.expect("task");
            assert_eq!(out, i * 2);
        }
        let groups = groups.load(Ordering::Relaxed);
        assert!(groups < 50, "50 concurrent requests took {groups} groups");
    }

    #[tokio::test]
    async fn a_failed_group_fails_every_request_in_it() {
        let committer = Arc::new(GroupCommit::start(
            1,
            100,
            |_: &u32| 1,
            |_reqs: Vec<u32>| async {
                Err::<Vec<u32>, _>(StoreError::Corrupt("disk on fire".into()))
            },
        ));
        let (a, b) = tokio::join!(committer.submit(1), committer.submit(2));
        for result in [a, b] {
            let e = result.expect_err("the group failed");
            assert!(e.to_string().contains("disk on fire"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_group_stops_at_its_weight() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let committer = Arc::new(GroupCommit::start(
            1,
            10,
            |r: &usize| *r,
            move |reqs: Vec<usize>| {
                seen.lock().expect("lock").push(reqs.iter().sum::<usize>());
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    Ok(reqs)
                }
            },
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let c = committer.clone();
            tasks.spawn(async move { c.submit(4).await.expect("committed") });
        }
        while tasks.join_next().await.is_some() {}
        // Weight 4 each, bound 10: a group stops once it reaches 10, so at most 12.
        let sizes = sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 80);
        assert!(sizes.iter().all(|s| *s <= 12), "{sizes:?}");
    }
}
