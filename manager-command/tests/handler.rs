//! The command handler against the real event store (halfstack PostgreSQL).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use manager_command::domain::{
    self, Domain, DomainCommand, DomainError, DomainFields, DomainPatch,
};
use manager_command::handler::{CommandError, CommandHandler};
use manager_events::testing::TestDb;
use manager_events::{EventMetadata, Problem};

fn create(name: &str) -> DomainCommand {
    DomainCommand::Create {
        name: name.into(),
        fields: DomainFields {
            is_active: true,
            ..Default::default()
        },
    }
}

fn describe(text: &str) -> DomainCommand {
    DomainCommand::Modify(DomainPatch {
        description: Some(text.into()),
        ..Default::default()
    })
}

#[tokio::test]
async fn commands_append_events_and_invariants_hold_across_the_log() {
    let db = TestDb::new().await;
    let handler = CommandHandler::new(db.store().await);
    let id = domain::stream_id("default");

    let done = handler
        .execute::<Domain>(&id, create("default"), EventMetadata::default())
        .await
        .unwrap();
    assert_eq!(
        (done.version, done.events.len(), done.position),
        (1, 1, Some(1))
    );

    // A second handler (another manager process) sees the name taken.
    let other = CommandHandler::new(db.store().await);
    let err = other
        .execute::<Domain>(&id, create("default"), EventMetadata::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::Rejected(DomainError::AlreadyExists(_))),
        "{err:?}"
    );
    let problem: Problem = err.into();
    assert_eq!(problem.status(), 400);

    // Nothing to do appends nothing.
    let noop = handler
        .execute::<Domain>(
            &id,
            DomainCommand::Modify(DomainPatch::default()),
            EventMetadata::default(),
        )
        .await
        .unwrap();
    assert_eq!((noop.position, noop.version), (None, 1));
    assert_eq!(handler.store().head_position().await.unwrap(), 1);

    let missing = handler
        .execute::<Domain>(
            &domain::stream_id("nope"),
            describe("x"),
            EventMetadata::default(),
        )
        .await
        .unwrap_err();
    let problem: Problem = missing.into();
    assert_eq!(
        (problem.status(), problem.kind.slug()),
        (404, "object-not-found")
    );
}

#[tokio::test]
async fn a_cached_aggregate_is_checked_against_its_stream() {
    let db = TestDb::new().await;
    let a = CommandHandler::new(db.store().await);
    let b = CommandHandler::new(db.store().await);
    let id = domain::stream_id("d");
    a.execute::<Domain>(&id, create("d"), EventMetadata::default())
        .await
        .unwrap();
    a.load::<Domain>(&id).await.unwrap(); // cached in a
    b.execute::<Domain>(&id, describe("from b"), EventMetadata::default())
        .await
        .unwrap();
    let (state, version) = a.load::<Domain>(&id).await.unwrap();
    assert_eq!((state.fields.description.as_str(), version), ("from b", 2));
}

#[tokio::test]
async fn state_cached_by_one_process_and_changed_by_another_is_never_trusted_to_refuse() {
    let db = TestDb::new().await;
    let a = CommandHandler::new(db.store().await);
    let b = CommandHandler::new(db.store().await);
    let id = domain::stream_id("d");
    // a caches "no such domain", then b creates it: a's modification must
    // not be refused as "not found" on the strength of its cache.
    a.load::<Domain>(&id).await.unwrap();
    b.execute::<Domain>(&id, create("d"), EventMetadata::default())
        .await
        .unwrap();
    let done = a
        .execute::<Domain>(&id, describe("from a"), EventMetadata::default())
        .await
        .unwrap();
    assert_eq!(done.version, 2);

    // a caches the domain; b purges it: a's change, decided on the cache,
    // conflicts and is refused on the log's state.
    b.execute::<Domain>(&id, DomainCommand::Purge, EventMetadata::default())
        .await
        .unwrap();
    let again = a
        .execute::<Domain>(&id, describe("too late"), EventMetadata::default())
        .await
        .unwrap_err();
    assert!(
        matches!(again, CommandError::Rejected(DomainError::NotFound)),
        "{again:?}"
    );
    assert_eq!(a.store().head_position().await.unwrap(), 3);
}

#[tokio::test]
async fn concurrent_commands_on_one_aggregate_land_once_each_or_get_409() {
    let db = TestDb::new().await;
    let id = domain::stream_id("busy");
    let setup = CommandHandler::new(db.store().await);
    setup
        .execute::<Domain>(&id, create("busy"), EventMetadata::default())
        .await
        .unwrap();
    // Four handlers with their own caches, as four manager processes would be.
    let mut tasks = Vec::new();
    for h in 0..4 {
        let handler = CommandHandler::new(db.store().await).with_max_attempts(20);
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut landed = 0;
            for i in 0..10 {
                match handler
                    .execute::<Domain>(&id, describe(&format!("{h}-{i}")), EventMetadata::default())
                    .await
                {
                    Ok(done) => {
                        assert_eq!(done.events.len(), 1);
                        landed += 1;
                    }
                    Err(CommandError::Conflict { .. }) => {}
                    Err(e) => panic!("{e:?}"),
                }
            }
            landed
        }));
    }
    let mut landed = 0;
    for t in tasks {
        landed += t.await.unwrap();
    }
    let (_, version) = setup.load::<Domain>(&id).await.unwrap();
    assert_eq!(
        version,
        1 + landed,
        "each accepted command appended exactly once"
    );
    assert!(
        landed >= 30,
        "retries with backoff let most contending commands land ({landed}/40)"
    );
}

#[tokio::test]
async fn with_one_attempt_a_conflict_is_a_409() {
    let db = TestDb::new().await;
    let id = domain::stream_id("hot");
    let setup = CommandHandler::new(db.store().await);
    setup
        .execute::<Domain>(&id, create("hot"), EventMetadata::default())
        .await
        .unwrap();
    let handlers: Vec<_> = futures::future::join_all((0..8).map(|_| db.store()))
        .await
        .into_iter()
        .map(|s| CommandHandler::new(s).with_max_attempts(1))
        .collect();
    let results = futures::future::join_all(handlers.iter().enumerate().map(|(i, h)| {
        h.execute::<Domain>(&id, describe(&i.to_string()), EventMetadata::default())
    }))
    .await;
    let conflicts: Vec<Problem> = results
        .into_iter()
        .filter_map(|r| match r {
            Err(e @ CommandError::Conflict { .. }) => Some(e.into()),
            Err(e) => panic!("{e:?}"),
            Ok(_) => None,
        })
        .collect();
    assert!(
        !conflicts.is_empty(),
        "eight racing writers with one attempt each: someone must lose"
    );
    assert!(conflicts.iter().all(|p| p.status() == 409));
}

#[tokio::test]
async fn a_retried_command_returns_the_first_result() {
    let db = TestDb::new().await;
    let handler = CommandHandler::new(db.store().await);
    let id = domain::stream_id("once");
    let meta = EventMetadata {
        idempotency_key: Some("req-1".into()),
        ..Default::default()
    };
    let first = handler
        .execute::<Domain>(&id, create("once"), meta.clone())
        .await
        .unwrap();
    // Deciding again would say "already exists"; the key answers first.
    let retry = handler
        .execute::<Domain>(&id, create("once"), meta)
        .await
        .unwrap();
    assert!(retry.deduplicated && !first.deduplicated);
    assert_eq!(retry.position, first.position);
    assert_eq!(handler.store().head_position().await.unwrap(), 1);
}

#[tokio::test]
async fn long_streams_are_snapshotted_and_load_from_the_snapshot() {
    use manager_command::domain::MemberKind;
    let db = TestDb::new().await;
    let id = domain::stream_id("big");
    let handler = CommandHandler::new(db.store().await).with_snapshot_every(50);
    handler
        .execute::<Domain>(&id, create("big"), EventMetadata::default())
        .await
        .unwrap();
    for i in 0..120 {
        handler
            .execute::<Domain>(
                &id,
                DomainCommand::AddMember {
                    kind: MemberKind::User,
                    id: format!("u{i}"),
                },
                EventMetadata::default(),
            )
            .await
            .unwrap();
    }
    assert!(
        handler.store().load_snapshot(&id).await.unwrap().is_none(),
        "the warm cache needed no replay"
    );
    // A cold process replays 121 events and leaves a snapshot behind ...
    let cold = CommandHandler::new(db.store().await).with_snapshot_every(50);
    let (state, version) = cold.load::<Domain>(&id).await.unwrap();
    assert_eq!((state.members.len(), version), (120, 121));
    let snap = cold
        .store()
        .load_snapshot(&id)
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(snap.stream_version, 121);
    // ... from which the next cold process starts, reading only what follows.
    cold.execute::<Domain>(&id, describe("after"), EventMetadata::default())
        .await
        .unwrap();
    let next = CommandHandler::new(db.store().await);
    let (from_snapshot, version) = next.load::<Domain>(&id).await.unwrap();
    assert_eq!(version, 122);
    assert_eq!(from_snapshot.fields.description, "after");
    assert_eq!(
        from_snapshot,
        cold.load::<Domain>(&id).await.unwrap().0,
        "same state as a full replay"
    );
}
