//! Rebuilding a projector's tables from the start of the log, without downtime.
//!
//! 1. Empty copies of the projector's tables (`CREATE TABLE ... (LIKE ...
//!    INCLUDING ALL)`) and of the checkpoint table are made in a shadow schema
//!    `rebuild_<name>`.
//! 2. The projector replays the whole log into them, batch by batch, with the
//!    shadow schema first on the `search_path` — projectors name their tables
//!    unqualified, so the same code writes the copies. Meanwhile the live
//!    tables keep serving queries and the live projector keeps them current.
//! 3. The swap, in one transaction: lock the live checkpoint (the live
//!    projector pauses), apply the last events to the copies, move the live
//!    tables out of the way and the copies in, set the live checkpoint to the
//!    copies' position, commit. Queries wait for the swap's few milliseconds,
//!    then see the new tables; none sees a half-built one.
//!
//! Index names of rebuilt tables are the ones PostgreSQL generates for
//! `LIKE ... INCLUDING ALL`, not the migration's.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};
use manager_events::EventStoreError;

use crate::runner::{ProjectionError, ProjectionRunner, Projector};

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Events replayed.
    pub events: u64,
    /// The log position the new tables reflect.
    pub position: u64,
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = BigInt)]
    position: i64,
}

impl ProjectionRunner {
    /// Rebuilds `projector`'s tables from position 0 and swaps them in; see
    /// the module docs. `progress` is told each replayed batch's position.
    pub async fn rebuild(
        &self,
        projector: &dyn Projector,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<RebuildReport, ProjectionError> {
        let name = projector.name();
        let shadow = ident(&format!("rebuild_{name}"));
        let retired = ident(&format!("retired_{name}"));
        let mut conn = self
            .store()
            .pool()
            .get()
            .await
            .map_err(|e| ProjectionError::Store(EventStoreError::Pool(e.to_string())))?;
        let conn: &mut AsyncPgConnection = &mut conn;

        let mut setup = format!(
            "DROP SCHEMA IF EXISTS {shadow} CASCADE; DROP SCHEMA IF EXISTS {retired} CASCADE; CREATE SCHEMA {shadow}; \
             CREATE TABLE {shadow}.projection_checkpoints (LIKE public.projection_checkpoints INCLUDING ALL);"
        );
        for table in projector.tables() {
            let t = ident(table);
            setup.push_str(&format!(
                "CREATE TABLE {shadow}.{t} (LIKE public.{t} INCLUDING ALL);"
            ));
        }
        conn.batch_execute(&setup).await?;

        // Replay into the copies while the live tables keep serving.
        let mut events = 0u64;
        loop {
            let applied = self.shadow_step(conn, projector, &shadow).await?;
            if applied == 0 {
                break;
            }
            events += applied as u64;
            progress(self.shadow_position(conn, &shadow, name).await?);
        }

        // The swap.
        AnsiTransactionManager::begin_transaction(conn).await?;
        let swapped = self
            .swap(conn, projector, &shadow, &retired, &mut events)
            .await;
        let position = match swapped {
            Ok(p) => {
                AnsiTransactionManager::commit_transaction(conn).await?;
                p
            }
            Err(e) => {
                let _ = AnsiTransactionManager::rollback_transaction(conn).await;
                return Err(e);
            }
        };
        conn.batch_execute(&format!(
            "DROP SCHEMA {retired} CASCADE; DROP SCHEMA {shadow} CASCADE;"
        ))
        .await?;
        tracing::info!(
            projector = name,
            events,
            position,
            "projection rebuilt and swapped in"
        );
        Ok(RebuildReport { events, position })
    }

    async fn shadow_step(
        &self,
        conn: &mut AsyncPgConnection,
        projector: &dyn Projector,
        shadow: &str,
    ) -> Result<usize, ProjectionError> {
        AnsiTransactionManager::begin_transaction(conn).await?;
        let result = async {
            conn.batch_execute(&format!("SET LOCAL search_path TO {shadow}, public"))
                .await?;
            self.step_in(conn, projector).await
        }
        .await;
        match result {
            Ok(n) => {
                AnsiTransactionManager::commit_transaction(conn).await?;
                Ok(n)
            }
            Err(e) => {
                let _ = AnsiTransactionManager::rollback_transaction(conn).await;
                Err(e)
            }
        }
    }

    async fn shadow_position(
        &self,
        conn: &mut AsyncPgConnection,
        shadow: &str,
        name: &str,
    ) -> Result<u64, ProjectionError> {
        let row: Position = diesel::sql_query(format!(
            "SELECT position FROM {shadow}.projection_checkpoints WHERE name = $1"
        ))
        .bind::<Text, _>(name)
        .get_result(conn)
        .await?;
        Ok(u64::try_from(row.position).unwrap_or(0))
    }

    async fn swap(
        &self,
        conn: &mut AsyncPgConnection,
        projector: &dyn Projector,
        shadow: &str,
        retired: &str,
        events: &mut u64,
    ) -> Result<u64, ProjectionError> {
        let name = projector.name();
        manager_events::prepared(
            "INSERT INTO public.projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind::<Text, _>(name)
        .execute(conn)
        .await?;
        // Pauses the live projector (it skips a locked checkpoint).
        manager_events::prepared(
            "SELECT position FROM public.projection_checkpoints WHERE name = $1 FOR UPDATE",
        )
        .bind::<Text, _>(name)
        .execute(conn)
        .await?;
        conn.batch_execute(&format!("SET LOCAL search_path TO {shadow}, public"))
            .await?;
        loop {
            let applied = self.step_in(conn, projector).await?;
            if applied == 0 {
                break;
            }
            *events += applied as u64;
        }
        let position = self.shadow_position(conn, shadow, name).await?;
        let mut moves = format!("SET LOCAL search_path TO public; CREATE SCHEMA {retired};");
        for table in projector.tables() {
            let t = ident(table);
            moves.push_str(&format!("ALTER TABLE public.{t} SET SCHEMA {retired}; ALTER TABLE {shadow}.{t} SET SCHEMA public;"));
        }
        conn.batch_execute(&moves).await?;
        manager_events::prepared("UPDATE public.projection_checkpoints SET position = $2, updated_at = now() WHERE name = $1")
            .bind::<Text, _>(name)
            .bind::<BigInt, _>(i64::try_from(position).unwrap_or(i64::MAX))
            .execute(conn)
            .await?;
        Ok(position)
    }
}
