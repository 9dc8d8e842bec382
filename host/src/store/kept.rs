//! Connections the delivery hot path keeps between uses instead of handing them back to sqlx's
//! pool. sqlx checks every connection handed back with a round trip (its `return_to_pool` pings
//! unconditionally): at a moderate rate that is one more wake-up of a PostgreSQL backend, and of
//! the hub, per publish, per claim and per group of attempt records, for nothing — a connection
//! that just answered is alive.
//!
//! A connection is kept only when the operation it served finished ([`Lent::keep`]); one
//! dropped otherwise (an error, or a future cancelled mid-statement) goes back through sqlx,
//! whose check flushes or discards it, as before. A kept connection idle for
//! [`CHECK_WHEN_IDLE`] or older than [`MAX_KEPT_FOR`] goes back through sqlx too, checked there,
//! and a fresh one is taken from the pool.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;

/// A connection idle this long is checked (a round trip) before it is used again: it may have
/// been cut meanwhile (a restarted server, a firewall's idle timeout). One in steady use that
/// breaks fails its statement and is dropped.
pub(super) const CHECK_WHEN_IDLE: Duration = Duration::from_secs(10);

/// A kept connection goes back to its pool after this long (sqlx's own `max_lifetime`), so a
/// server-side session does not live forever under steady load.
const MAX_KEPT_FOR: Duration = Duration::from_secs(30 * 60);

/// Up to `max` connections of `pool` kept out of it between uses; `max` leaves room in the pool
/// for whoever else uses it (0 keeps none).
#[derive(Debug)]
pub(crate) struct Kept<Db: sqlx::Database> {
    pool: sqlx::Pool<Db>,
    idle: Mutex<Vec<Idle<Db>>>,
    max: usize,
    /// Told when a connection is kept.
    returned: tokio::sync::Notify,
}

#[derive(Debug)]
struct Idle<Db: sqlx::Database> {
    conn: PoolConnection<Db>,
    since: Instant,
    born: Instant,
}

impl<Db: sqlx::Database> Kept<Db> {
    pub fn new(pool: sqlx::Pool<Db>, max: usize) -> Self {
        Self {
            pool,
            idle: Mutex::new(Vec::with_capacity(max)),
            max,
            returned: tokio::sync::Notify::new(),
        }
    }

    /// The most recently kept connection if it is fresh, else one from the pool — or one kept
    /// while waiting for the pool: a connection kept goes to a waiter, not back to the pool, so
    /// waiting on the pool alone could wait for a connection that never comes back to it.
    pub async fn take(&self) -> Result<Lent<'_, Db>, sqlx::Error> {
        loop {
            let kept = self.returned.notified();
            tokio::pin!(kept);
            // Registered before looking, so a `keep` between the look and the wait wakes it.
            kept.as_mut().enable();
            if let Some((conn, born)) = self.pop_fresh() {
                return Ok(self.lend(conn, born));
            }
            tokio::select! {
                conn = self.pool.acquire() => return Ok(self.lend(conn?, Instant::now())),
                () = kept => {}
            }
        }
    }

    /// The newest kept connection if it is fresh; the stale ones go back through sqlx.
    fn pop_fresh(&self) -> Option<(PoolConnection<Db>, Instant)> {
        let now = Instant::now();
        let fresh = |i: &Idle<Db>| {
            now.duration_since(i.since) < CHECK_WHEN_IDLE
                && now.duration_since(i.born) < MAX_KEPT_FOR
        };
        let (newest, stale) = {
            let mut idle = self.idle.lock().expect("kept connections");
            let newest = idle.pop();
            // The rest were used before the newest: the stale ones go back with it.
            let stale: Vec<Idle<Db>> = idle.extract_if(.., |i| !fresh(i)).collect();
            (newest, stale)
        };
        drop(stale);
        newest.filter(fresh).map(|i| (i.conn, i.born))
    }

    fn lend(&self, conn: PoolConnection<Db>, born: Instant) -> Lent<'_, Db> {
        Lent {
            conn: Some(conn),
            born,
            home: self,
        }
    }
}

/// A connection taken from [`Kept`]: handed back to sqlx's pool when dropped, kept only by
/// [`Lent::keep`].
#[derive(Debug)]
pub(crate) struct Lent<'a, Db: sqlx::Database> {
    conn: Option<PoolConnection<Db>>,
    born: Instant,
    home: &'a Kept<Db>,
}

impl<Db: sqlx::Database> Lent<'_, Db> {
    /// Begins a transaction on this connection; commit it, then [`Lent::keep`].
    pub async fn begin(&mut self) -> Result<sqlx::Transaction<'_, Db>, sqlx::Error> {
        sqlx::Connection::begin(&mut **self).await
    }

    /// Keeps the connection for the next user: call it once the operation it served finished.
    /// One still inside a transaction goes back through sqlx instead, which rolls it back.
    pub fn keep(mut self) {
        use sqlx::Connection as _;
        let conn = self.conn.take().expect("a lent connection");
        let mut idle = self.home.idle.lock().expect("kept connections");
        if idle.len() < self.home.max && !conn.is_in_transaction() {
            idle.push(Idle {
                conn,
                since: Instant::now(),
                born: self.born,
            });
            drop(idle);
            self.home.returned.notify_one();
        } else {
            drop(idle);
            drop(conn);
        }
    }
}

impl<Db: sqlx::Database> Deref for Lent<'_, Db> {
    type Target = Db::Connection;

    fn deref(&self) -> &Self::Target {
        self.conn.as_ref().expect("a lent connection")
    }
}

impl<Db: sqlx::Database> DerefMut for Lent<'_, Db> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.conn.as_mut().expect("a lent connection")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool(max: u32) -> sqlx::SqlitePool {
        sqlx::pool::PoolOptions::new()
            .max_connections(max)
            .connect("sqlite::memory:")
            .await
            .expect("in-memory pool")
    }

    /// A kept connection is the next one lent (the same session: its temporary table is
    /// there); one dropped without `keep`, or kept inside a transaction, is not kept; `max`
    /// bounds what is kept.
    #[tokio::test]
    async fn a_connection_is_kept_only_when_told_and_only_up_to_max() {
        use sqlx::Executor;
        let kept = Kept::new(pool(2).await, 1);
        let mut a = kept.take().await.expect("a");
        a.execute("CREATE TEMP TABLE mark (x)").await.expect("mark");
        let mut b = kept.take().await.expect("b");
        assert!(
            b.execute("SELECT * FROM mark").await.is_err(),
            "b is another session"
        );
        a.keep();
        b.keep(); // beyond max: back to the pool
        assert_eq!(kept.idle.lock().expect("kept").len(), 1);

        let mut again = kept.take().await.expect("again");
        again
            .execute("SELECT * FROM mark")
            .await
            .expect("the kept session");
        drop(again); // not kept
        assert_eq!(kept.idle.lock().expect("kept").len(), 0);

        // Inside a transaction (a caller that forgot to commit): back to sqlx, rolled back.
        let forgetful = Kept::new(pool(1).await, 1);
        let mut open = forgetful.take().await.expect("open");
        std::mem::forget(open.begin().await.expect("begin"));
        open.keep();
        assert_eq!(forgetful.idle.lock().expect("kept").len(), 0);
        let careful = Kept::new(pool(1).await, 1);
        let mut committed = careful.take().await.expect("committed");
        let mut tx = committed.begin().await.expect("begin");
        tx.execute("SELECT 1").await.expect("in the transaction");
        tx.commit().await.expect("commit");
        committed.keep();
        assert_eq!(careful.idle.lock().expect("kept").len(), 1);

        let none = Kept::new(pool(1).await, 0);
        none.take().await.expect("lent").keep();
        assert_eq!(none.idle.lock().expect("kept").len(), 0);
        none.take()
            .await
            .expect("the pool's one connection is free");
    }

    /// A connection kept while another caller waits on the pool goes to that caller: with a
    /// pool of one, waiting on the pool alone would wait until its timeout.
    #[tokio::test]
    async fn a_connection_kept_goes_to_whoever_waits_for_one() {
        let kept = std::sync::Arc::new(Kept::new(pool(1).await, 1));
        let first = kept.take().await.expect("the only connection");
        let waiter = tokio::spawn({
            let kept = kept.clone();
            async move { kept.take().await.map(Lent::keep) }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the only connection is lent");
        first.keep();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter got the kept connection, not the pool's timeout")
            .expect("joined")
            .expect("taken");
    }
}
