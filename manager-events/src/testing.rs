//! Test support: each test gets its own database, cloned from a template that
//! was migrated once (the crates.io test-database pattern), so tests run in
//! parallel with no shared state and no `#[serial]`.
//!
//! The server is the halfstack PostgreSQL (`MANAGER_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:8101/postgres`). Templates are named after a
//! fingerprint of the migrations, so editing a migration builds a new one.
//! Panicking is how these helpers report failure: they only run in tests.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use diesel::sql_types::Text;
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::config::EventStoreConfig;
use crate::migrations;
use crate::store::EventStore;

/// The admin URL of the test server.
pub fn admin_url() -> String {
    std::env::var("MANAGER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:8101/postgres".to_owned())
}

/// Replaces the database name of a `postgres://` URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].rfind('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// A database of its own for one test, dropped when the value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Text)]
    #[allow(dead_code)]
    datname: String,
}

impl TestDb {
    /// Creates a fresh, migrated database.
    pub async fn new() -> TestDb {
        let admin = admin_url();
        let template = ensure_template(&admin).await;
        let name = format!("mgr_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = AsyncPgConnection::establish(&admin)
            .await
            .expect("connect to the halfstack PostgreSQL (is `just halfstack-up` running?)");
        sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let url = with_database(&admin, &name);
        TestDb { name, url }
    }

    /// A store with default settings over a small pool.
    pub async fn store(&self) -> EventStore {
        self.store_with(EventStoreConfig::default()).await
    }

    /// A store with the given settings.
    pub async fn store_with(&self, config: EventStoreConfig) -> EventStore {
        EventStore::connect(&self.url, 8, config).expect("build the pool")
    }

    /// A plain connection to the test database.
    pub async fn connection(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context we could borrow: use a thread
        // with its own small runtime, and wait for it.
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = AsyncPgConnection::establish(&admin_url()).await {
                    let _ = sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// Builds the migrated template once per migration set; concurrent test
/// processes wait on an advisory lock while one of them builds it.
async fn ensure_template(admin: &str) -> String {
    let template = format!("mgr_tmpl_{}", migrations::FINGERPRINT);
    let mut conn = AsyncPgConnection::establish(admin)
        .await
        .expect("connect to the halfstack PostgreSQL (is `just halfstack-up` running?)");
    if template_exists(&mut conn, &template).await {
        return template;
    }
    sql_query("SELECT pg_advisory_lock(7364657)")
        .execute(&mut conn)
        .await
        .expect("take the template lock");
    if !template_exists(&mut conn, &template).await {
        let building = format!("{template}_building");
        sql_query(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .expect("drop a half-built template");
        sql_query(format!("CREATE DATABASE {building}"))
            .execute(&mut conn)
            .await
            .expect("create the template");
        migrations::run_pending(&with_database(admin, &building))
            .await
            .expect("migrate the template");
        sql_query(format!("ALTER DATABASE {building} RENAME TO {template}"))
            .execute(&mut conn)
            .await
            .expect("rename the template");
    }
    sql_query("SELECT pg_advisory_unlock(7364657)")
        .execute(&mut conn)
        .await
        .expect("release the template lock");
    template
}

async fn template_exists(conn: &mut AsyncPgConnection, template: &str) -> bool {
    !sql_query("SELECT datname::text AS datname FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(template)
        .load::<Exists>(conn)
        .await
        .expect("look up the template")
        .is_empty()
}

/// Appends `events` (any aggregate's vocabulary) to one stream in one
/// transaction, whatever its version: for tests that write the log directly.
pub async fn emit<E: serde::Serialize>(
    store: &EventStore,
    stream_id: String,
    stream_type: &str,
    events: &[E],
) {
    let new = events
        .iter()
        .map(|e| {
            let (event_type, payload) = crate::codec::encode(e).expect("a test event encodes");
            crate::NewEvent::new(event_type, payload)
        })
        .collect();
    store
        .append(crate::AppendBatch::single(
            stream_id,
            stream_type,
            crate::ExpectedVersion::Any,
            new,
        ))
        .await
        .expect("the test append succeeds");
}
