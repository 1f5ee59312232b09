//! Acting alone: a PostgreSQL session-level advisory lock held on a
//! dedicated connection. Roles that must act on one manager at a time (the
//! agent liveness sweeper, the scheduler) call [`AdvisoryLock::hold`] before
//! each round; if the manager dies, PostgreSQL ends its session and frees the
//! lock, and a standby takes it at its next attempt. The real fence is still
//! the stream version check on every append.

use diesel::QueryableByName;
use diesel::sql_types::Bool;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// One advisory lock and the connection it is held on.
pub struct AdvisoryLock {
    id: i64,
    role: &'static str,
    database_url: String,
    conn: Option<AsyncPgConnection>,
    held: bool,
}

impl std::fmt::Debug for AdvisoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvisoryLock")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl AdvisoryLock {
    /// The lock `id` in the database at `database_url`, for `role` (in logs:
    /// "this manager is now the {role}").
    pub fn new(id: i64, role: &'static str, database_url: impl Into<String>) -> Self {
        AdvisoryLock {
            id,
            role,
            database_url: database_url.into(),
            conn: None,
            held: false,
        }
    }

    /// Keeps the lock (checking its connection still works) or tries to
    /// take it, on one connection kept across attempts. Returns whether this
    /// manager holds it now.
    pub async fn hold(&mut self) -> bool {
        if self.conn.is_none() {
            match AsyncPgConnection::establish(&self.database_url).await {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, role = self.role, "cannot connect for the lock");
                    self.held = false;
                    return false;
                }
            }
        }
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        let query = if self.held {
            "SELECT true AS locked".to_owned()
        } else {
            format!("SELECT pg_try_advisory_lock({}) AS locked", self.id)
        };
        self.held = match diesel::sql_query(query).get_result::<Locked>(c).await {
            Ok(Locked { locked }) => {
                if locked && !self.held {
                    tracing::info!("this manager is now the {}", self.role);
                }
                locked
            }
            Err(e) => {
                // The session is gone, and with it the lock if we held it.
                tracing::warn!(error = %e, role = self.role, "lock connection failed");
                self.conn = None;
                false
            }
        };
        self.held
    }

    /// Lets the lock go (when held).
    pub async fn release(&mut self) {
        if self.held
            && let Some(c) = self.conn.as_mut()
        {
            let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({})", self.id))
                .execute(c)
                .await;
        }
        self.held = false;
    }
}
