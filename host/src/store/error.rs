//! Storage failures and how they are classified: "the database cannot serve now" (503, nothing
//! stored), "the commit's outcome is unknown", or a bug (500). Classified by sqlx's error types
//! and the databases' codes, never by message text.

use std::sync::Arc;

/// A storage failure. `Unavailable` means the database could not be reached (the API answers
/// 503 and nothing was stored); anything else is a bug or corruption (500).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The connection broke while a commit was on its way: the write may or may not be stored.
    #[error("database connection lost while committing; the outcome is unknown: {0}")]
    CommitUncertain(#[source] sqlx::Error),
    /// A write waited too long for the database and was given up, unwritten.
    #[error("database unavailable: {0}")]
    TimedOut(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The database could not be reached at start-up; the text is the innermost cause
    /// ("Connection refused", "database \"x\" does not exist").
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Subscription secrets cannot be sealed or opened with the configured keys.
    #[error("subscription secrets: {0}")]
    Sealing(String),
    /// The failure of a group commit, shared by every request of the group.
    #[error("{0}")]
    Shared(Arc<StoreError>),
}

impl StoreError {
    /// Whether the database could not be reached (nothing was written; try again later).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_)
            | StoreError::TimedOut(_)
            | StoreError::CommitUncertain(_)
            | StoreError::Connect(_) => true,
            StoreError::Shared(inner) => inner.is_unavailable(),
            _ => false,
        }
    }

    /// Whether the write may have been stored although it failed (see `CommitUncertain`).
    pub fn is_uncertain(&self) -> bool {
        match self {
            StoreError::CommitUncertain(_) => true,
            StoreError::Shared(inner) => inner.is_uncertain(),
            _ => false,
        }
    }

    /// A failed COMMIT: an answer from the server means it did not commit; a broken connection
    /// means nobody knows.
    pub fn from_commit(e: sqlx::Error) -> Self {
        StoreError::from(e).uncertain_if_broken()
    }

    /// The failure of a statement that commits on its own: as for a COMMIT, a connection broken
    /// on the way leaves its outcome unknown.
    pub fn uncertain_if_broken(self) -> Self {
        match self {
            StoreError::Unavailable(
                e @ (sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_)),
            ) => StoreError::CommitUncertain(e),
            other => other,
        }
    }
}

impl StoreError {
    /// A failed first connection, by what went wrong at the bottom: a server's own message
    /// (a missing database, a refused login) or the innermost I/O error.
    pub fn connect(e: &sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error() {
            return StoreError::Connect(db.message().to_owned());
        }
        let mut innermost: &dyn std::error::Error = e;
        while let Some(next) = innermost.source() {
            innermost = next;
        }
        StoreError::Connect(innermost.to_string())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            sqlx::Error::Database(ref db) if is_unavailable_code(db.as_ref()) => {
                StoreError::Unavailable(e)
            }
            other => StoreError::Database(other),
        }
    }
}

/// Whether a database error means "the database cannot serve now" rather than "the statement
/// is wrong": Postgres SQLSTATEs, and SQLite's primary result codes.
fn is_unavailable_code(error: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = error.code() else {
        return false;
    };
    if error
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        // SQLite reports extended codes (778 = IOERR_WRITE): the low byte is the primary code.
        // BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN.
        return code
            .parse::<i32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 8 | 10 | 13 | 14));
    }
    // Postgres: connection exceptions, shutdown, too many connections, read-only, disk full,
    // database missing, login refused.
    matches!(
        code.as_ref(),
        "08000"
            | "08001"
            | "08003"
            | "08004"
            | "08006"
            | "57P01"
            | "57P02"
            | "57P03"
            | "53300"
            | "53100"
            | "25006"
            | "3D000"
            | "28000"
            | "28P01"
    )
}

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn broken() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }

    #[test]
    fn a_write_cut_off_on_its_way_is_uncertain_and_one_never_sent_is_not() {
        // A COMMIT, or a statement committing on its own, whose connection broke.
        assert!(StoreError::from_commit(broken()).is_uncertain());
        assert!(
            StoreError::from(broken())
                .uncertain_if_broken()
                .is_uncertain()
        );
        // Never sent (no connection to be had), or answered by the server: nothing stored.
        let timed_out = StoreError::from(sqlx::Error::PoolTimedOut).uncertain_if_broken();
        assert!(timed_out.is_unavailable() && !timed_out.is_uncertain());
        let answered = StoreError::from(sqlx::Error::RowNotFound).uncertain_if_broken();
        assert!(!answered.is_unavailable() && !answered.is_uncertain());
    }
}
