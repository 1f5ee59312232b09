//! The database schema, embedded in the binary.
//!
//! Migrations live in the repository's `migrations/` folder (diesel's format)
//! and are compiled in, so `manager migrate` needs no files at run time.

use diesel::Connection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// Every migration of the project, in order.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// A fingerprint of the migrations' files, to tell schema versions apart.
pub const FINGERPRINT: &str = env!("MIGRATIONS_FINGERPRINT");

/// Advisory lock key held while migrating, so that managers starting together
/// do not race to apply the same migration.
const MIGRATION_LOCK: i64 = 0x6d67_725f_6d69_6772; // "mgr_migr"

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
#[error("migrating {what}: {message}")]
pub struct MigrationError {
    what: &'static str,
    message: String,
}

fn err(what: &'static str) -> impl FnOnce(String) -> MigrationError {
    move |message| MigrationError { what, message }
}

/// Applies every pending migration to the database at `database_url` and
/// returns the names of those applied (empty when the schema was current).
pub async fn run_pending(database_url: &str) -> Result<Vec<String>, MigrationError> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)
            .map_err(|e| err("connecting")(e.to_string()))?;
        diesel::RunQueryDsl::execute(
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")),
            &mut conn,
        )
        .map_err(|e| err("taking the migration lock")(e.to_string()))?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| err("applying migrations")(e.to_string()));
        let _ = diesel::RunQueryDsl::execute(
            diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")),
            &mut conn,
        );
        applied
    })
    .await
    .map_err(|e| err("running the migration task")(e.to_string()))?
}
