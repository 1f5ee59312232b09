//! Keypairs end to end: a keypair belongs to an active user, its secret is
//! sealed in the log and can be shredded.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use manager_command::handler::CommandHandler;
use manager_command::keypair::{
    CreateKeypair, DeleteKeypair, NewKeypair, generate_access_key, generate_secret_key,
};
use manager_command::policy::{KeypairPolicy, KeypairPolicyCommand, default_fields};
use manager_command::user::{User, UserCommand, UserPatch, UserStatus};
use manager_events::secrets::{
    ClusterKey, DEVELOPMENT_CLUSTER_KEY, KeyStore, KeyStoreError, SecretError,
};
use manager_events::testing::TestDb;
use manager_events::{EventMetadata, ProblemKind};
use manager_projections::ProjectionRunner;
use uuid::Uuid;

async fn setup() -> (TestDb, CommandHandler, KeyStore, Uuid) {
    let db = TestDb::new().await;
    let store = db.store().await;
    let handler = CommandHandler::new(store.clone());
    let keys = KeyStore::new(
        store.pool().clone(),
        ClusterKey::from_base64(DEVELOPMENT_CLUSTER_KEY).unwrap(),
    );
    common::domains(&handler, &["default"]).await;
    handler
        .execute::<KeypairPolicy>(
            &manager_command::policy::stream_id("default"),
            KeypairPolicyCommand::Create {
                name: "default".into(),
                fields: default_fields(),
            },
            EventMetadata::default(),
        )
        .await
        .unwrap();
    let uuid = common::user(&handler, "alice@example.com", "default").await;
    (db, handler, keys, uuid)
}

fn new(ak: &str, user: Uuid) -> NewKeypair {
    NewKeypair {
        access_key: ak.into(),
        user_uuid: user,
        is_active: true,
        is_admin: false,
        resource_policy: "default".into(),
        rate_limit: 1000,
    }
}

#[tokio::test]
async fn a_keypair_is_sealed_in_the_log_readable_with_the_keys_and_shreddable() {
    let (db, handler, keys, uuid) = setup().await;
    let (ak, sk) = (generate_access_key(), generate_secret_key());
    let create = CreateKeypair::prepare(&keys, new(&ak, uuid), &sk)
        .await
        .unwrap();
    handler
        .transact(&create, EventMetadata::default())
        .await
        .unwrap();

    // The first keypair is the user's main access key.
    let (user, _) = handler
        .load::<User>(&manager_command::user::stream_id(&uuid))
        .await
        .unwrap();
    assert_eq!(user.main_access_key.as_deref(), Some(ak.as_str()));
    // The secret is nowhere in the log in clear text.
    let log = handler.store().read_all(0, 1000).await.unwrap();
    assert!(!log.iter().any(|e| e.payload.to_string().contains(&sk)));

    // The read model keeps it sealed; the key store opens it.
    let runner = ProjectionRunner::new(handler.store().clone(), manager_projections::all(), 100);
    runner.catch_up().await.unwrap();
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        sealed_secret_key: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        user_email: String,
    }
    let row: Row = {
        use diesel_async::RunQueryDsl;
        diesel::sql_query(
            "SELECT sealed_secret_key, user_email FROM keypairs WHERE access_key = $1",
        )
        .bind::<diesel::sql_types::Text, _>(&ak)
        .get_result(&mut db.connection().await)
        .await
        .unwrap()
    };
    assert_eq!(row.user_email, "alice@example.com");
    assert_eq!(
        keys.open_secret(&ak, &row.sealed_secret_key).await.unwrap(),
        sk
    );
    // Another cluster key cannot open it.
    let stranger = KeyStore::new(
        handler.store().pool().clone(),
        ClusterKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap(),
    );
    assert!(
        stranger
            .open_secret(&ak, &row.sealed_secret_key)
            .await
            .is_err()
    );

    // Deleting it clears the main key; shredding its data key makes the
    // sealed secret, still in the immutable log, unreadable.
    handler
        .transact(
            &DeleteKeypair {
                access_key: ak.clone(),
            },
            EventMetadata::default(),
        )
        .await
        .unwrap();
    assert!(keys.shred(&ak).await.unwrap());
    let err = keys
        .open_secret(&ak, &row.sealed_secret_key)
        .await
        .unwrap_err();
    assert!(
        matches!(err, KeyStoreError::Secret(SecretError::Shredded)),
        "{err:?}"
    );
    let (user, _) = handler
        .load::<User>(&manager_command::user::stream_id(&uuid))
        .await
        .unwrap();
    assert_eq!(user.main_access_key, None);
}

#[tokio::test]
async fn keypairs_need_an_active_user_and_a_fresh_access_key() {
    let (_db, handler, keys, uuid) = setup().await;
    let create = CreateKeypair::prepare(&keys, new("AKIAFIXED", uuid), "secret")
        .await
        .unwrap();
    handler
        .transact(&create, EventMetadata::default())
        .await
        .unwrap();
    // The same access key again, even with a new secret.
    let again = CreateKeypair::prepare(&keys, new("AKIAFIXED", uuid), "other")
        .await
        .unwrap();
    let p = handler
        .transact(&again, EventMetadata::default())
        .await
        .unwrap_err();
    assert!(
        p.msg.as_deref().unwrap_or("").contains("already exists"),
        "{p}"
    );
    // A retry of the same creation seals with the same data key, so it opens.
    // An unknown user, and an inactive one.
    let nobody = CreateKeypair::prepare(&keys, new("AKIANOBODY", Uuid::new_v4()), "s")
        .await
        .unwrap();
    assert_eq!(
        handler
            .transact(&nobody, EventMetadata::default())
            .await
            .unwrap_err()
            .kind,
        ProblemKind::ObjectNotFound("user")
    );
    handler
        .execute::<User>(
            &manager_command::user::stream_id(&uuid),
            UserCommand::Modify(UserPatch {
                status: Some(UserStatus::Inactive),
                ..Default::default()
            }),
            EventMetadata::default(),
        )
        .await
        .unwrap();
    let inactive = CreateKeypair::prepare(&keys, new("AKIAINACTIVE", uuid), "s")
        .await
        .unwrap();
    let p = handler
        .transact(&inactive, EventMetadata::default())
        .await
        .unwrap_err();
    assert!(
        p.msg.as_deref().unwrap_or("").contains("active users"),
        "{p}"
    );
    assert!(
        CreateKeypair::prepare(&keys, new("AKIA-BAD", uuid), "s")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn purging_a_user_deletes_its_keypairs_and_their_secrets() {
    use manager_command::keypair::Keypair;
    use manager_command::user::PurgeUser;
    let (_db, handler, keys, uuid) = setup().await;
    let mut sealed = Vec::new();
    for ak in ["AKIAONE", "AKIATWO"] {
        let create = CreateKeypair::prepare(&keys, new(ak, uuid), "secret")
            .await
            .unwrap();
        handler
            .transact(&create, EventMetadata::default())
            .await
            .unwrap();
        let (kp, _) = handler
            .load::<Keypair>(&manager_command::keypair::stream_id(ak))
            .await
            .unwrap();
        sealed.push((ak, kp.sealed_secret_key));
    }
    let done = handler
        .transact(&PurgeUser { uuid }, EventMetadata::default())
        .await
        .unwrap();
    let to_shred = done.output.unwrap();
    assert_eq!(to_shred, ["AKIAONE", "AKIATWO"]);
    for ak in &to_shred {
        keys.shred(ak).await.unwrap();
    }
    for (ak, sealed) in sealed {
        let (kp, _) = handler
            .load::<Keypair>(&manager_command::keypair::stream_id(ak))
            .await
            .unwrap();
        assert!(kp.live().is_none(), "{ak} deleted with its owner");
        assert!(
            keys.open_secret(ak, &sealed).await.is_err(),
            "{ak}'s secret is gone"
        );
    }
}

#[tokio::test]
async fn a_keypair_needs_an_existing_policy_and_a_used_policy_cannot_be_deleted() {
    use manager_command::policy::delete_keypair_policy;
    let (_db, handler, keys, uuid) = setup().await;
    let mut bad = new("AKIANOPOLICY", uuid);
    bad.resource_policy = "missing".into();
    let create = CreateKeypair::prepare(&keys, bad, "s").await.unwrap();
    let p = handler
        .transact(&create, EventMetadata::default())
        .await
        .unwrap_err();
    assert_eq!(
        p.kind,
        ProblemKind::ObjectNotFound("keypair resource policy")
    );

    let create = CreateKeypair::prepare(&keys, new("AKIAPOLICY", uuid), "s")
        .await
        .unwrap();
    handler
        .transact(&create, EventMetadata::default())
        .await
        .unwrap();
    ProjectionRunner::new(handler.store().clone(), manager_projections::all(), 100)
        .catch_up()
        .await
        .unwrap();
    let p = delete_keypair_policy(&handler, "default", EventMetadata::default())
        .await
        .unwrap_err();
    assert!(p.msg.as_deref().unwrap_or("").contains("still use"), "{p}");

    handler
        .transact(
            &DeleteKeypair {
                access_key: "AKIAPOLICY".into(),
            },
            EventMetadata::default(),
        )
        .await
        .unwrap();
    ProjectionRunner::new(handler.store().clone(), manager_projections::all(), 100)
        .catch_up()
        .await
        .unwrap();
    delete_keypair_policy(&handler, "default", EventMetadata::default())
        .await
        .unwrap();
    let again = CreateKeypair::prepare(&keys, new("AKIAAFTER", uuid), "s")
        .await
        .unwrap();
    assert!(
        handler
            .transact(&again, EventMetadata::default())
            .await
            .is_err(),
        "the policy is gone"
    );
}
