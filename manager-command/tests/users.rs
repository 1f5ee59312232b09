//! User workflows against the real event store: a user, its domain and its
//! unique email/username change together or not at all.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use manager_command::domain::{self, Domain, DomainCommand};
use manager_command::handler::CommandHandler;
use manager_command::user::{CreateUser, PurgeUser, User, password};
use manager_events::testing::TestDb;
use manager_events::{EventMetadata, ProblemKind};

mod common;

use common::new_user as create;

async fn setup() -> (TestDb, CommandHandler) {
    let db = TestDb::new().await;
    let handler = CommandHandler::new(db.store().await);
    common::domains(&handler, &["default"]).await;
    (db, handler)
}

#[tokio::test]
async fn creating_a_user_joins_its_domain_and_claims_its_email_and_name_atomically() {
    let (_db, handler) = setup().await;
    let hash = password::hash("s3cret").unwrap();
    let wf = CreateUser {
        password_hash: hash.clone(),
        ..create("alice@example.com", "alice", "default")
    };
    let done = handler
        .transact(&wf, EventMetadata::default())
        .await
        .unwrap();
    assert_eq!(done.output, Some(wf.uuid));
    let events = handler.store().read_all(1, 100).await.unwrap();
    let streams: Vec<&str> = events.iter().map(|e| e.stream_type.as_str()).collect();
    assert_eq!(streams, ["user", "domain", "unique", "unique"]);
    assert!(
        events.iter().all(|e| e.xact_id == events[0].xact_id),
        "one transaction"
    );
    let (user, _) = handler
        .load::<User>(&manager_command::user::stream_id(&wf.uuid))
        .await
        .unwrap();
    assert!(password::verify("s3cret", &user.password_hash));
    assert!(
        !events
            .iter()
            .any(|e| e.payload.to_string().contains("s3cret")),
        "no clear-text password in the log"
    );
    let (dom, _) = handler
        .load::<Domain>(&domain::stream_id("default"))
        .await
        .unwrap();
    assert_eq!(dom.members.len(), 1);
}

#[tokio::test]
async fn emails_and_usernames_are_unique_ignoring_case_and_a_refusal_writes_nothing() {
    let (_db, handler) = setup().await;
    handler
        .transact(
            &create("alice@example.com", "alice", "default"),
            EventMetadata::default(),
        )
        .await
        .unwrap();
    let head = handler.store().head_position().await.unwrap();
    for wf in [
        create("Alice@Example.COM", "other", "default"),
        create("bob@example.com", "ALICE", "default"),
    ] {
        let p = handler
            .transact(&wf, EventMetadata::default())
            .await
            .unwrap_err();
        assert_eq!(p.status(), 400, "{p}");
        assert!(
            p.msg
                .as_deref()
                .unwrap_or("")
                .starts_with("integrity error"),
            "{p}"
        );
    }
    let p = handler
        .transact(
            &create("c@example.com", "c", "nowhere"),
            EventMetadata::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(p.kind, ProblemKind::ObjectNotFound("domain"));
    let p = handler
        .transact(
            &create("not-an-email", "d", "default"),
            EventMetadata::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(p.status(), 400);
    assert_eq!(
        handler.store().head_position().await.unwrap(),
        head,
        "refused commands appended nothing"
    );
}

#[tokio::test]
async fn racing_signups_for_one_email_have_one_winner() {
    let (db, _handler) = setup().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let handler = CommandHandler::new(db.store().await);
        tasks.push(tokio::spawn(async move {
            handler
                .transact(
                    &create("same@example.com", &format!("user{i}"), "default"),
                    EventMetadata::default(),
                )
                .await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => winners += 1,
            Err(p) => assert!(p.status() == 400 || p.status() == 409, "{p}"),
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn a_purged_user_frees_its_email_and_its_domain() {
    let (_db, handler) = setup().await;
    let alice = create("alice@example.com", "alice", "default");
    handler
        .transact(&alice, EventMetadata::default())
        .await
        .unwrap();
    let p = handler
        .execute::<Domain>(
            &domain::stream_id("default"),
            DomainCommand::Purge,
            EventMetadata::default(),
        )
        .await
        .unwrap_err();
    assert!(p.to_string().contains("1 user(s)"), "{p}");

    handler
        .transact(&PurgeUser { uuid: alice.uuid }, EventMetadata::default())
        .await
        .unwrap();
    handler
        .transact(
            &create("alice@example.com", "alice", "default"),
            EventMetadata::default(),
        )
        .await
        .unwrap();
    let (dom, _) = handler
        .load::<Domain>(&domain::stream_id("default"))
        .await
        .unwrap();
    assert_eq!(
        dom.members.len(),
        1,
        "the old alice left, the new one joined"
    );
}

#[tokio::test]
async fn a_burst_of_users_created_in_one_domain_all_succeed() {
    // Every creation appends to the domain's stream (membership), so they
    // all conflict with each other; contenders of one process queue for the
    // domain instead of failing each other with 409.
    let (_db, handler) = setup().await;
    let mut tasks = Vec::new();
    for i in 0..48 {
        let handler = handler.clone();
        tasks.push(tokio::spawn(async move {
            let wf = create(&format!("u{i}@example.com"), &format!("u{i}"), "default");
            handler.transact(&wf, EventMetadata::default()).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (dom, _) = handler
        .load::<Domain>(&domain::stream_id("default"))
        .await
        .unwrap();
    assert_eq!(dom.members.len(), 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sustained_signups_in_one_domain_all_succeed() {
    // Eight clients signing users up one after another: those queued for
    // the domain must not be starved by newcomers deciding on the cache.
    let (_db, handler) = setup().await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let handler = handler.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let wf = create(
                    &format!("w{w}u{i}@example.com"),
                    &format!("w{w}u{i}"),
                    "default",
                );
                handler.transact(&wf, EventMetadata::default()).await?;
            }
            Ok::<_, manager_events::Problem>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (dom, _) = handler
        .load::<Domain>(&domain::stream_id("default"))
        .await
        .unwrap();
    assert_eq!(dom.members.len(), 320);
}
