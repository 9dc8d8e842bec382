//! The seam between the store's algorithms (`common.rs`) and its two backends (`sqlite.rs`,
//! `postgres.rs`).
//!
//! Shared statements are written once with `$n` placeholders, which both drivers accept, and
//! bind [`Arg`]s: values in the hub's terms that each backend stores its own way (SQLite keeps
//! timestamps as integer microseconds and name lists as JSON text; PostgreSQL has native types).
//! Rows come back through [`DbRow`], which decodes those representations again. A backend
//! supplies a [`Dialect`]: its pools, the few statements whose text differs, and the operations
//! that truly differ (claims, bulk inserts, the wake-ups between instances).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreResult;
use super::handoff::Taker;
use super::kept::Kept;
use super::plan::DeliveryRow;
use super::remembered::Remembered;
use super::seal::Keyring;
use crate::model::{AttemptRecord, Backend, Claim, ClaimedDelivery, NewEvent};

/// A value bound to a shared statement.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Uuid(Uuid),
    OptUuid(Option<Uuid>),
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
    /// A JSON object (JSONB in PostgreSQL, TEXT in SQLite).
    Json(&'a str),
    /// A list of names (TEXT[] in PostgreSQL, a JSON array in SQLite).
    Names(&'a [String]),
    /// A list of ids: an array parameter in PostgreSQL. SQLite has no array parameters, so
    /// [`Conn::id_list`] expands lists there into one placeholder per id.
    Uuids(&'a [Uuid]),
}

/// Decoding of the columns shared statements read, whatever the backend stores them as.
pub(crate) trait DbRow: Send + Sync {
    fn uuid(&self, col: &str) -> StoreResult<Uuid>;
    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>>;
    fn text(&self, col: &str) -> StoreResult<String>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    fn bool(&self, col: &str) -> StoreResult<bool>;
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>>;
    fn time(&self, col: &str) -> StoreResult<DateTime<Utc>>;
    fn opt_time(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>>;
    fn names(&self, col: &str) -> StoreResult<Vec<String>>;

    /// A count or counter, never negative.
    fn count(&self, col: &str) -> StoreResult<u32> {
        Ok(u32::try_from(self.int(col)?.max(0)).unwrap_or(u32::MAX))
    }

    /// The column `col` as the type the caller wants (see [`Column`]).
    fn get<T: Column>(&self, col: &str) -> StoreResult<T>
    where
        Self: Sized,
    {
        T::read(self, col)
    }
}

/// A Rust type a column decodes to, so a row can be read by field type (`rows.rs`'s `decode!`).
pub(crate) trait Column: Sized {
    fn read(row: &impl DbRow, col: &str) -> StoreResult<Self>;
}

macro_rules! columns {
    ($($ty:ty => |$row:ident, $col:ident| $read:expr;)*) => {$(
        impl Column for $ty {
            fn read($row: &impl DbRow, $col: &str) -> StoreResult<Self> {
                $read
            }
        }
    )*};
}

columns! {
    Uuid => |row, col| row.uuid(col);
    Option<Uuid> => |row, col| row.opt_uuid(col);
    String => |row, col| row.text(col);
    Option<String> => |row, col| row.opt_text(col);
    bool => |row, col| row.bool(col);
    u32 => |row, col| row.count(col);
    Option<u32> => |row, col| Ok(row.opt_int(col)?.map(|n| n.clamp(0, u32::MAX.into()) as u32));
    u64 => |row, col| Ok(row.int(col)?.max(0) as u64);
    Option<u16> => |row, col| Ok(row.opt_int(col)?.map(|n| n.clamp(0, u16::MAX.into()) as u16));
    DateTime<Utc> => |row, col| row.time(col);
    Option<DateTime<Utc>> => |row, col| row.opt_time(col);
    Vec<String> => |row, col| row.names(col);
}

/// A connection (or a transaction, through `DerefMut`) running shared statements.
pub(crate) trait Conn: Send {
    type Row: DbRow;

    /// Most ids one statement takes in a `{ids}` list.
    const IDS_PER_STATEMENT: usize;

    /// What replaces `{ids}` for `count` ids bound from placeholder `$first` on, and the
    /// arguments that bind them.
    fn id_list<'a>(first: usize, ids: &'a [Uuid]) -> (String, Vec<Arg<'a>>);

    fn exec<'a>(
        &'a mut self,
        sql: &'a str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = StoreResult<u64>> + Send + 'a;

    fn rows<'a>(
        &'a mut self,
        sql: &'a str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = StoreResult<Vec<Self::Row>>> + Send + 'a;

    /// The first row `sql` returns, if any (for statements that return at most one).
    fn row<'a>(
        &'a mut self,
        sql: &'a str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = StoreResult<Option<Self::Row>>> + Send + 'a {
        async move { Ok(self.rows(sql, args).await?.into_iter().next()) }
    }

    /// The statements `sql` becomes when `{ids}` stands for `ids` (bound after `args`): one per
    /// chunk the backend takes, each with its arguments.
    fn statements_in<'a>(
        sql: &str,
        args: &[Arg<'a>],
        ids: &'a [Uuid],
    ) -> Vec<(String, Vec<Arg<'a>>)> {
        ids.chunks(Self::IDS_PER_STATEMENT)
            .map(|chunk| {
                let (list, id_args) = Self::id_list(args.len() + 1, chunk);
                let all = args.iter().copied().chain(id_args).collect();
                (sql.replace("{ids}", &list), all)
            })
            .collect()
    }

    /// Runs `sql`, in which `{ids}` stands for the list `ids` (bound after `args`), in as many
    /// statements as the backend needs; returns the rows affected.
    fn exec_in<'a>(
        &'a mut self,
        sql: &'a str,
        args: &'a [Arg<'a>],
        ids: &'a [Uuid],
    ) -> impl Future<Output = StoreResult<u64>> + Send + 'a {
        async move {
            let mut affected = 0;
            for (sql, all) in Self::statements_in(sql, args, ids) {
                affected += self.exec(&sql, &all).await?;
            }
            Ok(affected)
        }
    }

    /// As [`Conn::exec_in`], returning the rows read.
    fn rows_in<'a>(
        &'a mut self,
        sql: &'a str,
        args: &'a [Arg<'a>],
        ids: &'a [Uuid],
    ) -> impl Future<Output = StoreResult<Vec<Self::Row>>> + Send + 'a {
        async move {
            let mut rows = Vec::new();
            for (sql, all) in Self::statements_in(sql, args, ids) {
                rows.extend(self.rows(&sql, &all).await?);
            }
            Ok(rows)
        }
    }
}

/// Implements [`Conn`]'s statement runners and [`DbRow`] for one sqlx driver. `$repr` is the
/// backend's module of representation functions: `bind`, `id_list`, `rows_affected`, `int`,
/// `opt_int`, `time`, `opt_time`, `names`. The backend file imports `Arg`, `StoreResult`,
/// `DateTime` and `Utc`, which the expansion names.
macro_rules! driver {
    ($db:ty, $conn:ty, $row:ty, $repr:ident) => {
        impl $crate::store::sql::DbRow for $row {
            fn uuid(&self, col: &str) -> StoreResult<uuid::Uuid> {
                Ok(sqlx::Row::try_get(self, col)?)
            }
            fn opt_uuid(&self, col: &str) -> StoreResult<Option<uuid::Uuid>> {
                Ok(sqlx::Row::try_get(self, col)?)
            }
            fn text(&self, col: &str) -> StoreResult<String> {
                Ok(sqlx::Row::try_get(self, col)?)
            }
            fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
                Ok(sqlx::Row::try_get(self, col)?)
            }
            fn bool(&self, col: &str) -> StoreResult<bool> {
                Ok(sqlx::Row::try_get(self, col)?)
            }
            fn int(&self, col: &str) -> StoreResult<i64> {
                $repr::int(self, col)
            }
            fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
                $repr::opt_int(self, col)
            }
            fn time(&self, col: &str) -> StoreResult<DateTime<Utc>> {
                $repr::time(self, col)
            }
            fn opt_time(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
                $repr::opt_time(self, col)
            }
            fn names(&self, col: &str) -> StoreResult<Vec<String>> {
                $repr::names(self, col)
            }
        }

        impl $crate::store::sql::Conn for $conn {
            type Row = $row;
            const IDS_PER_STATEMENT: usize = $repr::IDS_PER_STATEMENT;

            fn id_list<'a>(first: usize, ids: &'a [uuid::Uuid]) -> (String, Vec<Arg<'a>>) {
                $repr::id_list(first, ids)
            }

            async fn exec<'a>(&'a mut self, sql: &'a str, args: &'a [Arg<'a>]) -> StoreResult<u64> {
                let query = args
                    .iter()
                    .fold(sqlx::query::<$db>(sql), |q, a| $repr::bind(q, *a));
                Ok($repr::rows_affected(&query.execute(&mut *self).await?))
            }

            async fn rows<'a>(
                &'a mut self,
                sql: &'a str,
                args: &'a [Arg<'a>],
            ) -> StoreResult<Vec<$row>> {
                let query = args
                    .iter()
                    .fold(sqlx::query::<$db>(sql), |q, a| $repr::bind(q, *a));
                Ok(query.fetch_all(&mut *self).await?)
            }
        }
    };
}
pub(crate) use driver;

/// Where a backend's reads and writes go (the same pool where the database takes both alike).
#[derive(Debug)]
pub(crate) struct Pools<Db: sqlx::Database> {
    pub reader: sqlx::Pool<Db>,
    /// Writes take their connection here: kept between uses (`kept.rs`).
    pub writer: Kept<Db>,
    /// Seals and opens subscription secrets.
    pub keyring: Keyring,
    /// The local engine new deliveries are handed to (`handoff.rs`).
    pub taker: Taker,
    /// Destinations of recent event types, for publishes that check them as they write
    /// (`remembered.rs`).
    pub remembered: Remembered,
}

/// The destinations a publish was planned for, per event type: checked by
/// [`Dialect::insert_published_if_same`].
pub(crate) struct Fingerprints<'a> {
    pub types: Vec<&'a str>,
    pub fingerprints: Vec<Option<String>>,
    /// The publish's time (secrets past their expiry no longer count).
    pub at: DateTime<Utc>,
}

/// One backend: its pools, the statements whose text differs, and the operations that do.
pub(crate) trait Dialect: fmt::Debug + Send + Sync + Sized + 'static {
    type Db: sqlx::Database<Connection = Self::Conn>;
    type Conn: Conn + sqlx::Connection<Database = Self::Db>;

    const BACKEND: Backend;

    /// The destinations of event type `$1` at `$2`: live, enabled subscriptions (`id`,
    /// `blocked_until`, the end of an open circuit's cool-off, `paused`, `filter`, `ordered`;
    /// `direct` when a delivery may be handed to the engine, with `url`, `headers`, `transform`
    /// and the valid `secrets` as a JSON array, newest first: `handoff.rs`), in id order, and
    /// bound connectors (`connector`; NULL for a subscription). Where the backend
    /// [`Dialect::CHECKS_DESTINATIONS`], each row also carries the `fingerprint` of them all.
    const MATCHING_DESTINATIONS: &'static str;

    /// Whether a publish may be written with remembered destinations, checked by the insert
    /// itself ([`Dialect::insert_published_if_same`]; `remembered.rs`).
    const CHECKS_DESTINATIONS: bool = false;

    /// A condition true when `column` is none of the names in `$n` (a name list argument).
    fn name_not_in(column: &str, n: usize) -> String;

    /// Whether statements take row locks (`FOR UPDATE …`). PostgreSQL's concurrent writers
    /// need them; SQLite's single writer serialises every write transaction anyway.
    const ROW_LOCKS: bool;

    /// `clause` where the backend takes row locks, nothing elsewhere.
    fn lock(clause: &'static str) -> &'static str {
        if Self::ROW_LOCKS { clause } else { "" }
    }

    /// Connections for reads and for writes.
    fn pools(&self) -> &Pools<Self::Db>;

    fn reader(&self) -> &sqlx::Pool<Self::Db> {
        &self.pools().reader
    }

    fn writer(&self) -> &Kept<Self::Db> {
        &self.pools().writer
    }

    /// Where publishes write: [`Dialect::writer`], unless the backend keeps connections of
    /// their own for them.
    fn publisher(&self) -> &Kept<Self::Db> {
        self.writer()
    }

    fn keyring(&self) -> &Keyring {
        &self.pools().keyring
    }

    /// Whether [`Dialect::insert_published`] is one statement, atomic on its own: then a publish
    /// that claims no idempotency key needs no transaction (one round trip and its commit,
    /// instead of BEGIN, the inserts and COMMIT).
    const ONE_STATEMENT_PUBLISH: bool = false;

    /// Inserts `events` and their deliveries `rows` (either may be empty); those with a
    /// `leased_until` `in_flight`, leased to `owner`.
    fn insert_published(
        conn: &mut Self::Conn,
        events: &[&NewEvent],
        rows: &[DeliveryRow<'_>],
        owner: Option<&str>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// As [`Dialect::insert_published`], in one statement, but only if the destinations of each
    /// event type still have the fingerprint `known` gives (else nothing is written): whether
    /// it wrote. Backends that do not [`Dialect::CHECKS_DESTINATIONS`] never write here.
    fn insert_published_if_same(
        conn: &mut Self::Conn,
        events: &[&NewEvent],
        rows: &[DeliveryRow<'_>],
        owner: Option<&str>,
        known: &Fingerprints<'_>,
    ) -> impl Future<Output = StoreResult<bool>> + Send {
        let _ = (conn, events, rows, owner, known);
        async { Ok(false) }
    }

    /// See [`super::Store::claim_deliveries`].
    fn claim(
        &self,
        claim: Claim<'_>,
    ) -> impl Future<Output = StoreResult<Vec<ClaimedDelivery>>> + Send;

    /// See [`super::Store::record_attempts`].
    fn record(
        &self,
        records: Vec<AttemptRecord>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = StoreResult<Vec<bool>>> + Send;

    /// Tells peers that work was committed (see [`super::Store::announce_work`]).
    fn notify_peers(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Wakes `wake` when a peer announces work, until `stop` (see
    /// [`super::Store::listen_for_work`]). Without peers it only waits for `stop`.
    fn wait_for_peers(
        &self,
        wake: Arc<tokio::sync::Notify>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            let _ = wake;
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}
