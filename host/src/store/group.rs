//! Group commit: requests that arrive while the database is busy are written together, in one
//! transaction, by a few writer tasks.
//!
//! A commit costs a round trip per statement and a disk flush; under load, paying that once for
//! a group instead of once per request is what lets a publish or an attempt record keep up with
//! thousands per second. Nothing is traded for it: each caller gets its answer only after the
//! transaction holding its request committed, exactly as if it had written alone. A publish is
//! written at once, with whatever queued up meanwhile (its caller is waiting for the answer);
//! attempt records, which nobody waits for but the engine's bookkeeping, may [`Linger`] a few
//! milliseconds for company, so that a moderate rate does not pay a statement and a flushed
//! commit per record.
//!
//! Invariants:
//! - a group never holds more than `max_weight` units (events, records) plus one request, and
//!   waits for more at most its [`Linger`]'s `up_to` after its first request was taken;
//! - the queue is bounded: when it is full, callers wait (back-pressure, never unbounded memory);
//! - a failed group fails each of its requests with the same error, so none is half-written;
//!   callers decide whether to retry;
//! - a request waits at most [`MAX_WAIT`] for a writer: past it, it is answered "unavailable"
//!   and never written, so an answer of failure always means "not stored". A publish whose
//!   caller has gone (a client that hung up) is dropped unwritten for the same reason; an
//!   attempt record is written whatever its caller does ([`Abandoned`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};
// Tokio's clock, so tests can let time pass without waiting for it.
use tokio::time::Instant;

use super::{Store, StoreError, StoreResult};
use crate::model::{AttemptRecord, Backend, PublishOutcome, PublishRequest, now};

/// Requests waiting for a writer; beyond this, callers wait for room.
const QUEUE: usize = 4096;
/// Most events one publish group commits together (a batch request counts its events).
pub const MAX_PUBLISH_GROUP: usize = 2000;
/// Most attempt records written in one transaction.
pub const MAX_RECORD_GROUP: usize = 512;
/// Longest a request waits in the queue. With the pools' 5 s wait for a connection, a request
/// is answered within about 15 s even while the database is down, well inside the API's 30 s
/// request timeout (whose 503 would not say whether the write happened). (SQLite may also wait
/// on a lock another process holds, up to its 10 s busy timeout: one hub per file avoids it.)
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// How long an attempt-record group that is still small waits for more records. A delivery's
/// receiver has its answer by then, so delivery latency is unchanged (the attempt shows in the
/// API, and the next delivery of an ordering key starts, up to that much later); at 400/s this
/// writes about one round per two records instead of one per record. The delivery's slot is held
/// meanwhile, so a busy hub (eight records within a few milliseconds) does not wait at all.
pub const RECORD_LINGER: Linger = Linger {
    up_to: Duration::from_millis(5),
    until: 8,
};

/// A small group's wait for company (see [`RECORD_LINGER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// Longest wait, from when the group's first request was taken.
    pub up_to: Duration,
    /// No wait once the group weighs this much.
    pub until: usize,
}

impl Linger {
    /// Write at once whatever queued meanwhile.
    pub const NONE: Self = Self {
        up_to: Duration::ZERO,
        until: 0,
    };
}

/// The committer of the API's publishes ([`Store::publish_group`]).
pub fn publishes(store: Arc<dyn Store>) -> GroupCommit<PublishRequest, PublishOutcome> {
    GroupCommit::start(
        writers(store.backend()),
        MAX_PUBLISH_GROUP,
        Linger::NONE,
        |r: &PublishRequest| r.events.len(),
        // A publish whose client hung up was never acknowledged: not writing it is the truth.
        Abandoned::Drop,
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
        RECORD_LINGER,
        |_| 1,
        // An attempt happened whether or not its task is still waiting (a stopping engine):
        // its record is written.
        Abandoned::Write,
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

/// A request, where to answer it, and until when it may wait for a writer.
/// What to do with a queued request whose caller stopped waiting for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandoned {
    /// Leave it unwritten.
    Drop,
    /// Write it all the same.
    Write,
}

type Job<Req, Out> = (Req, oneshot::Sender<StoreResult<Out>>, Instant);

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
    /// Starts `writers` tasks. Each takes the next request and whatever else is queued (or
    /// arrives within `linger`), up to `max_weight` units as counted by `weight`, and hands the
    /// group to `write`, which answers one `Out` per request, in order. The tasks end when the
    /// last handle is dropped.
    pub fn start<W, F>(
        writers: usize,
        max_weight: usize,
        linger: Linger,
        weight: fn(&Req) -> usize,
        abandoned: Abandoned,
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
                while let Some(jobs) = next_group(&rx, max_weight, linger, weight, abandoned).await
                {
                    let (requests, replies): (Vec<Req>, Vec<_>) =
                        jobs.into_iter().map(|(req, reply, _)| (req, reply)).unzip();
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
            .send((request, reply, Instant::now() + MAX_WAIT))
            .await
            .map_err(|_| StoreError::Corrupt("the group committer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Corrupt("the group committer dropped a request".into()))?
    }
}

/// Waits for one live request, then takes what else is queued right now, and what arrives
/// within `linger` while the group is small, up to `max_weight`. Requests past their wait are
/// answered "unavailable" here, and those whose caller is gone are dropped: neither is ever
/// written.
async fn next_group<Req, Out>(
    rx: &Mutex<mpsc::Receiver<Job<Req, Out>>>,
    max_weight: usize,
    linger: Linger,
    weight: fn(&Req) -> usize,
    abandoned: Abandoned,
) -> Option<Vec<Job<Req, Out>>> {
    let mut rx = rx.lock().await;
    let mut jobs = Vec::new();
    while jobs.is_empty() {
        let first = rx.recv().await?;
        jobs.extend(live(first, abandoned));
    }
    let lingers_until = Instant::now() + linger.up_to;
    let mut total: usize = jobs.iter().map(|job| weight(&job.0)).sum();
    while total < max_weight {
        let job = match rx.try_recv() {
            Ok(job) => job,
            Err(_) if total < linger.until => {
                match tokio::time::timeout_at(lingers_until, rx.recv()).await {
                    Ok(Some(job)) => job,
                    Ok(None) | Err(_) => break,
                }
            }
            Err(_) => break,
        };
        if let Some(job) = live(job, abandoned) {
            total += weight(&job.0);
            jobs.push(job);
        }
    }
    Some(jobs)
}

/// The job, unless its caller has gone or its wait is over (then it is answered here).
fn live<Req, Out>(job: Job<Req, Out>, abandoned: Abandoned) -> Option<Job<Req, Out>> {
    let (request, reply, deadline) = job;
    if reply.is_closed() && abandoned == Abandoned::Drop {
        return None;
    }
    if Instant::now() > deadline {
        let _ = reply.send(Err(StoreError::TimedOut(format!(
            "the database took no write for {}s; nothing was written",
            MAX_WAIT.as_secs()
        ))));
        return None;
    }
    Some((request, reply, deadline))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// One writer taking groups of up to 100 requests, each of weight 1, writing with `write`.
    fn committer<W, F>(write: W) -> Arc<GroupCommit<u32, u32>>
    where
        W: Fn(Vec<u32>) -> F + Send + Sync + 'static,
        F: Future<Output = StoreResult<Vec<u32>>> + Send + 'static,
    {
        Arc::new(GroupCommit::start(
            1,
            100,
            Linger::NONE,
            |_| 1,
            Abandoned::Write,
            write,
        ))
    }

    #[tokio::test]
    async fn answers_each_request_in_order_and_groups_what_queued() {
        let groups = Arc::new(AtomicUsize::new(0));
        let seen = groups.clone();
        let committer = committer(move |reqs| {
            seen.fetch_add(1, Ordering::Relaxed);
            async move {
                // Slow enough that the others queue up behind the first group.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(reqs.into_iter().map(|r| r * 2).collect())
            }
        });
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
        let committer = committer(|_| async { Err(StoreError::Corrupt("disk on fire".into())) });
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
            Linger::NONE,
            |r: &usize| *r,
            Abandoned::Write,
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

    /// A small group waits up to its linger for more requests, and no longer; one that reached
    /// its size is written at once.
    #[tokio::test(start_paused = true)]
    async fn a_small_group_lingers_for_company_and_no_longer() {
        let linger = Linger {
            up_to: Duration::from_millis(5),
            until: 3,
        };
        let groups = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = groups.clone();
        let committer = Arc::new(GroupCommit::start(
            1,
            100,
            linger,
            |_| 1,
            Abandoned::Write,
            move |reqs: Vec<u32>| {
                seen.lock().expect("lock").push(reqs.clone());
                async move { Ok(reqs) }
            },
        ));
        let submit = |r: u32| {
            let c = committer.clone();
            tokio::spawn(async move { c.submit(r).await.expect("committed") })
        };
        // A second request 2 ms after the first joins its group.
        let started = Instant::now();
        let first = submit(1);
        tokio::time::sleep(Duration::from_millis(2)).await;
        let second = submit(2);
        assert_eq!(
            (first.await.expect("task"), second.await.expect("task")),
            (1, 2)
        );
        assert_eq!(
            started.elapsed(),
            linger.up_to,
            "written when the linger ran out"
        );
        // Alone, a request waits the linger out, then is written by itself.
        let started = Instant::now();
        assert_eq!(submit(3).await.expect("task"), 3);
        assert_eq!(started.elapsed(), linger.up_to);
        // A group that reaches `until` does not wait.
        let started = Instant::now();
        let all = [submit(4), submit(5), submit(6)];
        for (task, r) in all.into_iter().zip(4..) {
            assert_eq!(task.await.expect("task"), r);
        }
        assert!(started.elapsed() < linger.up_to);
        assert_eq!(
            *groups.lock().expect("lock"),
            vec![vec![1, 2], vec![3], vec![4, 5, 6]]
        );
    }

    /// While the database hangs, a queued request is given up after `MAX_WAIT` and answered
    /// "unavailable"; it is never written, even once the database is back.
    #[tokio::test(start_paused = true)]
    async fn a_request_that_waited_too_long_is_refused_unwritten() {
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = written.clone();
        let committer = committer(move |reqs| {
            seen.lock().expect("lock").extend(reqs.iter().copied());
            async move {
                // The database hangs on the first group for longer than MAX_WAIT.
                if reqs.contains(&1) {
                    tokio::time::sleep(MAX_WAIT * 2).await;
                }
                Ok(reqs)
            }
        });
        let first = tokio::spawn({
            let c = committer.clone();
            async move { c.submit(1).await }
        });
        tokio::task::yield_now().await;
        let second = committer.submit(2).await;
        let e = second.expect_err("waited past MAX_WAIT");
        assert!(e.is_unavailable(), "{e}");
        assert!(e.to_string().contains("nothing was written"), "{e}");
        assert_eq!(first.await.expect("task").expect("committed"), 1);
        assert_eq!(
            *written.lock().expect("lock"),
            vec![1],
            "2 was never written"
        );
    }
}
