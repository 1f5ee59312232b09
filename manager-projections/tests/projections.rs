//! Projectors against the real event store (halfstack PostgreSQL).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures::FutureExt;
use futures::future::BoxFuture;
use manager_events::codec::encode;
use manager_events::domain::{self, DomainEvent, DomainFields, DomainPatch};
use manager_events::testing::TestDb;
use manager_events::{AppendBatch, EventStore, ExpectedVersion, NewEvent, RecordedEvent};
use manager_projections::domains::DomainsProjector;
use manager_projections::{ProjectionError, ProjectionRunner, Projector};

async fn emit(store: &EventStore, name: &str, events: &[DomainEvent]) {
    let new = events
        .iter()
        .map(|e| {
            let (t, p) = encode(e).unwrap();
            NewEvent::new(t, p)
        })
        .collect();
    store
        .append(AppendBatch::single(
            domain::stream_id(name),
            domain::STREAM_TYPE,
            ExpectedVersion::Any,
            new,
        ))
        .await
        .unwrap();
}

fn created(name: &str) -> DomainEvent {
    DomainEvent::DomainCreated {
        name: name.into(),
        fields: DomainFields {
            is_active: true,
            description: "first".into(),
            ..Default::default()
        },
    }
}

#[derive(QueryableByName, Debug, PartialEq)]
struct DomainRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    description: String,
    #[diesel(sql_type = Bool)]
    is_active: bool,
    #[diesel(sql_type = Nullable<Text>)]
    integration_id: Option<String>,
    #[diesel(sql_type = Text)]
    total_resource_slots: String,
}

async fn domains(db: &TestDb) -> Vec<DomainRow> {
    diesel::sql_query(
        "SELECT name, description, is_active, integration_id, total_resource_slots::text AS total_resource_slots \
         FROM domains ORDER BY name",
    )
    .load(&mut db.connection().await)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_domains_read_model_follows_the_log() {
    let db = TestDb::new().await;
    let store = db.store().await;
    emit(&store, "a", &[created("a")]).await;
    emit(&store, "b", &[created("b")]).await;
    emit(&store, "c", &[created("c")]).await;
    let patch = DomainPatch {
        description: Some("second".into()),
        integration_id: Some("ext-1".into()),
        total_resource_slots: Some([("cpu".to_owned(), "8".to_owned())].into()),
        ..Default::default()
    };
    emit(&store, "a", &[DomainEvent::DomainModified(patch)]).await;
    emit(&store, "b", &[DomainEvent::DomainDeactivated]).await;
    emit(&store, "c", &[DomainEvent::DomainPurged]).await;

    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(DomainsProjector)], 2);
    runner.catch_up().await.unwrap();
    let rows = domains(&db).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        DomainRow {
            name: "a".into(),
            description: "second".into(),
            is_active: true,
            integration_id: Some("ext-1".into()),
            total_resource_slots: r#"{"cpu": "8"}"#.into(),
        }
    );
    assert_eq!((rows[1].name.as_str(), rows[1].is_active), ("b", false));
    let status = runner.status().await.unwrap();
    assert_eq!((status[0].position, status[0].lag()), (6, 0));

    // Clearing the integration id with an empty string.
    let clear = DomainPatch {
        integration_id: Some(String::new()),
        ..Default::default()
    };
    emit(&store, "a", &[DomainEvent::DomainModified(clear)]).await;
    assert_eq!(runner.status().await.unwrap()[0].lag(), 1);
    runner.catch_up().await.unwrap();
    assert_eq!(domains(&db).await[0].integration_id, None);
}

/// Counts how often each event was applied, and can fail or hang after
/// writing, to play a crash between apply and commit.
struct Counting {
    fail_once: AtomicBool,
    hang: AtomicBool,
    /// Fails every batch while set.
    broken: AtomicBool,
}

impl Projector for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["applied"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        async move {
            for e in events {
                diesel::sql_query(
                    "INSERT INTO applied (position, times) VALUES ($1, 1) \
                     ON CONFLICT (position) DO UPDATE SET times = applied.times + 1",
                )
                .bind::<BigInt, _>(e.position as i64)
                .execute(conn)
                .await?;
            }
            if AtomicBool::load(&self.hang, Ordering::SeqCst) {
                futures::future::pending::<()>().await;
            }
            if self.fail_once.swap(false, Ordering::SeqCst)
                || AtomicBool::load(&self.broken, Ordering::SeqCst)
            {
                return Err(ProjectionError::Other(
                    "crash after applying, before commit".into(),
                ));
            }
            Ok(())
        }
        .boxed()
    }
}

#[derive(QueryableByName)]
struct Applied {
    #[diesel(sql_type = BigInt)]
    position: i64,
    #[diesel(sql_type = Integer)]
    times: i32,
}

async fn applied(db: &TestDb) -> Vec<(i64, i32)> {
    let rows: Vec<Applied> =
        diesel::sql_query("SELECT position, times FROM applied ORDER BY position")
            .load(&mut db.connection().await)
            .await
            .unwrap();
    rows.into_iter().map(|r| (r.position, r.times)).collect()
}

async fn counting_setup(events: u64) -> (TestDb, EventStore) {
    let db = TestDb::new().await;
    db.connection()
        .await
        .batch_execute("CREATE TABLE applied (position bigint PRIMARY KEY, times integer NOT NULL)")
        .await
        .unwrap();
    let store = db.store().await;
    for i in 0..events {
        emit(&store, &format!("d{}", i % 7), &[created("x")]).await;
    }
    (db, store)
}

#[tokio::test]
async fn a_crash_between_apply_and_commit_loses_nothing_and_repeats_nothing() {
    let (db, store) = counting_setup(50).await;
    let counting = Arc::new(Counting {
        fail_once: AtomicBool::new(false),
        hang: AtomicBool::new(false),
        broken: AtomicBool::new(false),
    });
    let runner = ProjectionRunner::new(store.clone(), vec![counting.clone()], 20);

    runner.step(counting.as_ref()).await.unwrap(); // 1..=20 applied and committed
    counting.fail_once.store(true, Ordering::SeqCst);
    assert!(runner.step(counting.as_ref()).await.is_err()); // 21..=40 written, then "crash"
    assert_eq!(
        applied(&db).await.len(),
        20,
        "the failed batch left nothing behind"
    );

    // A process killed mid-batch: its transaction dies with its connection.
    counting.hang.store(true, Ordering::SeqCst);
    let stuck = {
        let (runner, counting) = (runner.clone(), counting.clone());
        tokio::spawn(async move { runner.step(counting.as_ref()).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    stuck.abort();
    let _ = stuck.await;
    counting.hang.store(false, Ordering::SeqCst);

    runner.catch_up().await.unwrap();
    let rows = applied(&db).await;
    assert_eq!(rows.len(), 50);
    assert!(
        rows.iter()
            .enumerate()
            .all(|(i, &(p, n))| p == i as i64 + 1 && n == 1),
        "{rows:?}"
    );
    assert_eq!(runner.status().await.unwrap()[0].position, 50);
}

#[tokio::test]
async fn a_round_applies_every_projector_at_once_and_a_failing_one_holds_up_no_other() {
    let (db, store) = counting_setup(0).await;
    for i in 0..30 {
        emit(&store, &format!("d{i}"), &[created(&format!("d{i}"))]).await;
    }
    let counting = Arc::new(Counting {
        fail_once: AtomicBool::new(false),
        hang: AtomicBool::new(false),
        broken: AtomicBool::new(true),
    });
    let runner = ProjectionRunner::new(
        store.clone(),
        vec![counting.clone(), Arc::new(DomainsProjector)],
        100,
    );
    // The counting projector fails: the domains still move.
    let round = runner.round().await.unwrap();
    assert_eq!(round.applied, 30, "{round:?}");
    assert!(applied(&db).await.is_empty());
    assert_eq!(domains(&db).await.len(), 30);
    let positions: Vec<u64> = runner
        .status()
        .await
        .unwrap()
        .iter()
        .map(|s| s.position)
        .collect();
    assert_eq!(positions, vec![0, 30]);
    counting.broken.store(false, Ordering::SeqCst);

    // Mended, the next round brings the one behind up, in one transaction with the
    // other (which has nothing to do).
    let round = runner.round().await.unwrap();
    assert_eq!(round.applied, 30);
    assert_eq!(round.reached, vec![("counting", 30), ("domains", 30)]);
    emit(&store, "late", &[created("late")]).await;
    let round = runner.round().await.unwrap();
    assert_eq!(round.applied, 2, "one event, applied by both projectors");
    let rows = applied(&db).await;
    assert_eq!(rows.len(), 31);
    assert!(rows.iter().all(|&(_, n)| n == 1), "{rows:?}");
    assert_eq!(domains(&db).await.len(), 31);
}

#[tokio::test]
async fn two_processes_running_one_projector_apply_each_event_once() {
    let (db, store) = counting_setup(200).await;
    let counting = Arc::new(Counting {
        fail_once: AtomicBool::new(false),
        hang: AtomicBool::new(false),
        broken: AtomicBool::new(false),
    });
    let a = ProjectionRunner::new(store.clone(), vec![counting.clone()], 7);
    let b = ProjectionRunner::new(db.store().await, vec![counting.clone()], 5);
    let (ra, rb) = tokio::join!(a.catch_up(), b.catch_up());
    ra.unwrap();
    rb.unwrap();
    let rows = applied(&db).await;
    assert_eq!(rows.len(), 200);
    assert!(
        rows.iter().all(|&(_, n)| n == 1),
        "an event was applied twice"
    );
}

#[tokio::test]
async fn a_running_projector_follows_new_events() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(DomainsProjector)], 100);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.clone().run(stopped));
    emit(&store, "live", &[created("live")]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while domains(&db).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projector never applied the event"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_users_read_model_follows_the_log() {
    use manager_events::user::{self, UserEvent, UserFields, UserPatch, UserRole, UserStatus};
    let db = TestDb::new().await;
    let store = db.store().await;
    let id = uuid::Uuid::new_v4();
    let fields = UserFields {
        username: "alice".into(),
        email: "alice@example.com".into(),
        full_name: "Alice".into(),
        description: String::new(),
        need_password_change: true,
        status: UserStatus::Active,
        role: UserRole::User,
        domain_name: "default".into(),
        resource_policy: "default".into(),
        allowed_client_ip: Some(vec!["10.0.0.0/8".into()]),
        totp_activated: false,
        sudo_session_enabled: false,
    };
    let events = [
        UserEvent::UserCreated {
            uuid: id,
            fields,
            password_hash: "$argon2id$h1".into(),
        },
        UserEvent::UserModified(UserPatch {
            role: Some(UserRole::Admin),
            allowed_client_ip: Some(vec![]),
            ..Default::default()
        }),
        UserEvent::UserPasswordChanged {
            password_hash: "$argon2id$h2".into(),
        },
        UserEvent::UserDeleted,
    ];
    let new = events
        .iter()
        .map(|e| {
            let (t, p) = encode(e).unwrap();
            NewEvent::new(t, p)
        })
        .collect();
    store
        .append(AppendBatch::single(
            user::stream_id(&id),
            user::STREAM_TYPE,
            ExpectedVersion::NoStream,
            new,
        ))
        .await
        .unwrap();
    let runner = ProjectionRunner::new(store.clone(), manager_projections::all(), 100);
    runner.catch_up().await.unwrap();

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        email: String,
        #[diesel(sql_type = Text)]
        role: String,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = Text)]
        password_hash: String,
        #[diesel(sql_type = Nullable<Text>)]
        ips: Option<String>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT email, role, status, password_hash, allowed_client_ip::text AS ips FROM users",
    )
    .load(&mut db.connection().await)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (
            r.email.as_str(),
            r.role.as_str(),
            r.status.as_str(),
            r.password_hash.as_str(),
            r.ips.as_deref()
        ),
        (
            "alice@example.com",
            "admin",
            "deleted",
            "$argon2id$h2",
            None
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_replaces_the_tables_while_queries_keep_getting_consistent_answers() {
    let db = TestDb::new().await;
    let store = db.store().await;
    for i in 0..300 {
        emit(&store, &format!("d{i}"), &[created(&format!("d{i}"))]).await;
    }
    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(DomainsProjector)], 50);
    runner.catch_up().await.unwrap();
    // Damage the live read model: the rebuild must repair it from the log.
    diesel::sql_query("UPDATE domains SET description = 'corrupted' WHERE name = 'd7'")
        .execute(&mut db.connection().await)
        .await
        .unwrap();

    // Readers and the live projector run throughout the rebuild.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, url) = (stop.clone(), db.url.clone());
        tokio::spawn(async move {
            use diesel_async::AsyncConnection;
            let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
            let mut reads = 0;
            while !AtomicBool::load(&stop, Ordering::SeqCst) {
                #[derive(QueryableByName)]
                struct Count {
                    #[diesel(sql_type = BigInt)]
                    n: i64,
                }
                let c: Count =
                    diesel::sql_query("SELECT count(*) AS n FROM domains WHERE name LIKE 'd%'")
                        .get_result(&mut conn)
                        .await
                        .unwrap();
                assert_eq!(c.n, 300, "a query saw a partial read model");
                reads += 1;
            }
            reads
        })
    };
    let (stop_live, stopped) = tokio::sync::watch::channel(false);
    let live = tokio::spawn(runner.clone().run(stopped));
    emit(&store, "late", &[created("late")]).await;

    let mut batches = 0;
    let report = runner
        .rebuild(&DomainsProjector, |_| batches += 1)
        .await
        .unwrap();
    assert_eq!(report.position, store.head_position().await.unwrap());
    assert!(batches >= 6, "replayed in batches ({batches})");
    stop.store(true, Ordering::SeqCst);
    assert!(reader.await.unwrap() > 0);

    let rows = domains(&db).await;
    assert_eq!(rows.len(), 301);
    assert!(
        rows.iter().all(|r| r.description == "first"),
        "the rebuild repaired d7"
    );
    // The live projector carries on into the new tables.
    emit(&store, "after", &[created("after")]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while domains(&db).await.len() < 302 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live projector stopped after the swap"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_live.send(true).unwrap();
    live.await.unwrap();
    // Nothing is left behind.
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let schemas: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_namespace WHERE nspname LIKE 'rebuild_%' OR nspname LIKE 'retired_%'",
    )
    .get_result(&mut db.connection().await)
    .await
    .unwrap();
    assert_eq!(schemas.n, 0);
}

#[tokio::test]
async fn the_user_and_project_policy_read_models_follow_the_log() {
    use manager_events::project_policy::{self, ProjectPolicyEvent, ProjectPolicyFields};
    use manager_events::user_policy::{self, UserPolicyEvent, UserPolicyFields};
    let db = TestDb::new().await;
    let store = db.store().await;
    let user_fields = UserPolicyFields {
        max_vfolder_count: 0,
        max_quota_scope_size: -1,
        max_session_count_per_model_session: 10,
        max_customized_image_count: 3,
    };
    let user = |name: &str, events: Vec<UserPolicyEvent>| {
        let store = store.clone();
        let id = user_policy::stream_id(name);
        async move { manager_events::testing::emit(&store, id, user_policy::STREAM_TYPE, &events).await }
    };
    user(
        "default",
        vec![
            UserPolicyEvent::UserPolicyCreated {
                name: "default".into(),
                fields: user_fields.clone(),
            },
            UserPolicyEvent::UserPolicyModified {
                fields: UserPolicyFields {
                    max_quota_scope_size: 1 << 40,
                    ..user_fields.clone()
                },
            },
        ],
    )
    .await;
    user(
        "gone",
        vec![
            UserPolicyEvent::UserPolicyCreated {
                name: "gone".into(),
                fields: user_fields,
            },
            UserPolicyEvent::UserPolicyDeleted,
        ],
    )
    .await;
    let project_fields = ProjectPolicyFields {
        max_vfolder_count: 4,
        max_quota_scope_size: -1,
        max_network_count: 3,
    };
    manager_events::testing::emit(
        &store,
        project_policy::stream_id("default"),
        project_policy::STREAM_TYPE,
        &[
            ProjectPolicyEvent::ProjectPolicyCreated {
                name: "default".into(),
                fields: project_fields.clone(),
            },
            ProjectPolicyEvent::ProjectPolicyModified {
                fields: ProjectPolicyFields {
                    max_network_count: -1,
                    ..project_fields
                },
            },
        ],
    )
    .await;
    let runner = ProjectionRunner::new(store.clone(), manager_projections::all(), 100);
    runner.catch_up().await.unwrap();

    #[derive(QueryableByName, Debug, PartialEq)]
    struct UserRow {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Integer)]
        max_vfolder_count: i32,
        #[diesel(sql_type = BigInt)]
        max_quota_scope_size: i64,
        #[diesel(sql_type = Integer)]
        max_session_count_per_model_session: i32,
        #[diesel(sql_type = Integer)]
        max_customized_image_count: i32,
    }
    let rows: Vec<UserRow> = diesel::sql_query(
        "SELECT name, max_vfolder_count, max_quota_scope_size, max_session_count_per_model_session, \
         max_customized_image_count \
         FROM user_resource_policies ORDER BY name",
    )
    .load(&mut db.connection().await)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [UserRow {
            name: "default".into(),
            max_vfolder_count: 0,
            max_quota_scope_size: 1 << 40,
            max_session_count_per_model_session: 10,
            max_customized_image_count: 3,
        }]
    );

    #[derive(QueryableByName, Debug, PartialEq)]
    struct ProjectRow {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Integer)]
        max_vfolder_count: i32,
        #[diesel(sql_type = BigInt)]
        max_quota_scope_size: i64,
        #[diesel(sql_type = Integer)]
        max_network_count: i32,
    }
    let rows: Vec<ProjectRow> = diesel::sql_query(
        "SELECT name, max_vfolder_count, max_quota_scope_size, max_network_count \
         FROM project_resource_policies",
    )
    .load(&mut db.connection().await)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [ProjectRow {
            name: "default".into(),
            max_vfolder_count: 4,
            max_quota_scope_size: -1,
            max_network_count: -1,
        }]
    );

    // Deleting the project policy removes its row; a rebuild gives the same.
    manager_events::testing::emit(
        &store,
        project_policy::stream_id("default"),
        project_policy::STREAM_TYPE,
        &[ProjectPolicyEvent::ProjectPolicyDeleted],
    )
    .await;
    runner.catch_up().await.unwrap();
    let report = runner
        .rebuild(
            &manager_projections::user_policies::UserPoliciesProjector,
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(report.position, store.head_position().await.unwrap());
    let count = |table: &'static str| {
        let url = db.url.clone();
        async move {
            use diesel_async::AsyncConnection;
            #[derive(QueryableByName)]
            struct Count {
                #[diesel(sql_type = BigInt)]
                n: i64,
            }
            let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
            let c: Count = diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
                .get_result(&mut conn)
                .await
                .unwrap();
            c.n
        }
    };
    assert_eq!(count("project_resource_policies").await, 0);
    assert_eq!(count("user_resource_policies").await, 1);
}

#[tokio::test]
async fn the_resource_presets_read_model_follows_the_log() {
    use manager_events::resource_preset::{self, ResourcePresetEvent, ResourcePresetFields};
    let db = TestDb::new().await;
    let store = db.store().await;
    let fields = |cpu: &str, shm: Option<i64>, group: Option<&str>| ResourcePresetFields {
        resource_slots: [
            ("cpu".to_owned(), cpu.to_owned()),
            ("mem".to_owned(), "34359738368".to_owned()),
            ("cuda.shares".to_owned(), "0.5".to_owned()),
        ]
        .into(),
        shared_memory: shm,
        scaling_group_name: group.map(Into::into),
    };
    let preset = |name: &'static str, events: Vec<ResourcePresetEvent>| {
        let store = store.clone();
        async move {
            manager_events::testing::emit(
                &store,
                resource_preset::stream_id(name),
                resource_preset::STREAM_TYPE,
                &events,
            )
            .await
        }
    };
    preset(
        "01-small",
        vec![
            ResourcePresetEvent::ResourcePresetCreated {
                name: "01-small".into(),
                fields: fields("8", Some(1 << 30), Some("gpu")),
            },
            ResourcePresetEvent::ResourcePresetModified {
                fields: fields("4", None, None),
            },
        ],
    )
    .await;
    preset(
        "02-medium",
        vec![ResourcePresetEvent::ResourcePresetCreated {
            name: "02-medium".into(),
            fields: fields("24", Some(1 << 30), Some("gpu")),
        }],
    )
    .await;
    preset(
        "03-gone",
        vec![
            ResourcePresetEvent::ResourcePresetCreated {
                name: "03-gone".into(),
                fields: fields("1", None, None),
            },
            ResourcePresetEvent::ResourcePresetDeleted,
        ],
    )
    .await;
    let runner = ProjectionRunner::new(store.clone(), manager_projections::all(), 100);
    runner.catch_up().await.unwrap();

    #[derive(QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Text)]
        resource_slots: String,
        #[diesel(sql_type = Nullable<BigInt>)]
        shared_memory: Option<i64>,
        #[diesel(sql_type = Nullable<Text>)]
        scaling_group_name: Option<String>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT name, resource_slots::text AS resource_slots, shared_memory, scaling_group_name \
         FROM resource_presets ORDER BY name",
    )
    .load(&mut db.connection().await)
    .await
    .unwrap();
    let slots =
        |cpu: &str| format!(r#"{{"cpu": "{cpu}", "mem": "34359738368", "cuda.shares": "0.5"}}"#);
    assert_eq!(
        rows,
        [
            Row {
                name: "01-small".into(),
                resource_slots: slots("4"),
                shared_memory: None,
                scaling_group_name: None,
            },
            Row {
                name: "02-medium".into(),
                resource_slots: slots("24"),
                shared_memory: Some(1 << 30),
                scaling_group_name: Some("gpu".into()),
            },
        ]
    );
}

#[tokio::test]
async fn keypairs_created_changed_and_deleted_in_one_batch_project_in_order() {
    use manager_events::keypair::{self as kp, KeypairEvent, KeypairFields, KeypairPatch};
    use manager_projections::keypairs::KeypairsProjector;
    let db = TestDb::new().await;
    let store = db.store().await;
    let emit_kp = |ak: &'static str, event: KeypairEvent| {
        let store = store.clone();
        async move {
            let (t, p) = encode(&event).unwrap();
            store
                .append(AppendBatch::single(
                    kp::stream_id(ak),
                    kp::STREAM_TYPE,
                    ExpectedVersion::Any,
                    vec![NewEvent::new(t, p)],
                ))
                .await
                .unwrap();
        }
    };
    let created = |ak: &str| KeypairEvent::KeypairCreated {
        access_key: ak.into(),
        fields: KeypairFields {
            user_uuid: uuid::Uuid::nil(),
            user_email: "u@example.com".into(),
            is_active: true,
            is_admin: false,
            resource_policy: "default".into(),
            rate_limit: 100,
        },
        sealed_secret_key: "sealed".into(),
    };
    emit_kp("AKIA1", created("AKIA1")).await;
    emit_kp("AKIA2", created("AKIA2")).await;
    emit_kp(
        "AKIA2",
        KeypairEvent::KeypairModified(KeypairPatch {
            rate_limit: Some(7),
            ..Default::default()
        }),
    )
    .await;
    emit_kp("AKIA3", created("AKIA3")).await;
    emit_kp("AKIA3", KeypairEvent::KeypairDeleted).await;
    emit_kp("AKIA4", created("AKIA4")).await;
    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(KeypairsProjector)], 100);
    let round = runner.round().await.unwrap();
    assert_eq!(round.applied, 6);

    #[derive(QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = Text)]
        access_key: String,
        #[diesel(sql_type = BigInt)]
        rate_limit: i64,
        #[diesel(sql_type = BigInt)]
        position: i64,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT access_key, rate_limit, position FROM keypairs ORDER BY access_key",
    )
    .load(&mut db.connection().await)
    .await
    .unwrap();
    let got: Vec<(&str, i64, i64)> = rows
        .iter()
        .map(|r| (r.access_key.as_str(), r.rate_limit, r.position))
        .collect();
    assert_eq!(
        got,
        vec![("AKIA1", 100, 1), ("AKIA2", 7, 3), ("AKIA4", 100, 6)]
    );
}
