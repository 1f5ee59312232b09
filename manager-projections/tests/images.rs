//! The `images` projector against the real event store (halfstack PostgreSQL).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use diesel_async::RunQueryDsl;
use manager_events::EventStore;
use manager_events::image::{self, ImageEvent, ImageFields, SlotLimits};
use manager_events::testing::TestDb;
use manager_projections::ProjectionRunner;
use manager_projections::images::ImagesProjector;

const PYTHON: &str = "cr.backend.ai/stable/python:3.9-ubuntu20.04";

async fn emit(store: &EventStore, canonical: &str, arch: &str, events: &[ImageEvent]) {
    manager_events::testing::emit(
        store,
        image::stream_id(canonical, arch),
        image::STREAM_TYPE,
        events,
    )
    .await;
}

fn fields(digest: &str) -> ImageFields {
    ImageFields {
        registry: "cr.backend.ai".into(),
        image: "stable/python".into(),
        tag: "3.9-ubuntu20.04".into(),
        config_digest: Some(digest.into()),
        size_bytes: 1_234_567,
        kind: String::new(),
        labels: [
            ("ai.backend.runtime-type".to_owned(), "python".to_owned()),
            ("ai.backend.role".to_owned(), "COMPUTE".to_owned()),
        ]
        .into(),
        resources: [
            (
                "cpu".to_owned(),
                SlotLimits {
                    min: "1".into(),
                    max: None,
                },
            ),
            (
                "mem".to_owned(),
                SlotLimits {
                    min: "268435456".into(),
                    max: Some("17179869184".into()),
                },
            ),
        ]
        .into(),
    }
}

fn registered(arch: &str, digest: &str) -> ImageEvent {
    ImageEvent::ImageRegistered {
        canonical: PYTHON.into(),
        architecture: arch.into(),
        fields: fields(digest),
    }
}

fn aliased(alias: &str) -> ImageEvent {
    ImageEvent::ImageAliased {
        alias: alias.into(),
    }
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Row {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    architecture: String,
    #[diesel(sql_type = Text)]
    registry: String,
    #[diesel(sql_type = Text)]
    image: String,
    #[diesel(sql_type = Text)]
    tag: String,
    #[diesel(sql_type = Nullable<Text>)]
    config_digest: Option<String>,
    #[diesel(sql_type = BigInt)]
    size_bytes: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    labels: String,
    #[diesel(sql_type = Text)]
    resources: String,
    #[diesel(sql_type = Text)]
    aliases: String,
    #[diesel(sql_type = Bool)]
    created_before_modified: bool,
}

async fn rows(db: &TestDb) -> Vec<Row> {
    diesel::sql_query(
        "SELECT i.id::text AS id, i.name, i.architecture, i.registry, i.image, i.tag, \
         i.config_digest, i.size_bytes, i.type AS kind, i.labels::text AS labels, \
         i.resources::text AS resources, \
         coalesce((SELECT string_agg(a.alias, ',' ORDER BY a.alias) FROM image_aliases a \
                   WHERE a.image_id = i.id), '') AS aliases, \
         i.created_at < i.modified_at AS created_before_modified \
         FROM images i ORDER BY i.name, i.architecture",
    )
    .load(&mut db.connection().await)
    .await
    .unwrap()
}

async fn alias_count(db: &TestDb) -> usize {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query("SELECT count(*) AS n FROM image_aliases")
        .get_result(&mut db.connection().await)
        .await
        .unwrap();
    usize::try_from(n.n).unwrap()
}

#[tokio::test]
async fn the_images_read_model_follows_registrations_aliases_and_forgetting() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(ImagesProjector)], 3);

    emit(
        &store,
        PYTHON,
        "x86_64",
        &[
            registered("x86_64", "sha256:aaa"),
            aliased("python"),
            aliased("python:3.9-ubuntu20.04"),
        ],
    )
    .await;
    emit(
        &store,
        PYTHON,
        "aarch64",
        &[registered("aarch64", "sha256:bbb")],
    )
    .await;
    runner.catch_up().await.unwrap();
    let r = rows(&db).await;
    assert_eq!(r.len(), 2);
    let x86_id = r[1].id.clone();
    assert_eq!(
        r[1],
        Row {
            id: x86_id.clone(),
            name: PYTHON.into(),
            architecture: "x86_64".into(),
            registry: "cr.backend.ai".into(),
            image: "stable/python".into(),
            tag: "3.9-ubuntu20.04".into(),
            config_digest: Some("sha256:aaa".into()),
            size_bytes: 1_234_567,
            kind: "compute".into(),
            labels: r#"{"ai.backend.role": "COMPUTE", "ai.backend.runtime-type": "python"}"#.into(),
            resources: r#"{"cpu": {"max": null, "min": "1"}, "mem": {"max": "17179869184", "min": "268435456"}}"#.into(),
            aliases: "python,python:3.9-ubuntu20.04".into(),
            created_before_modified: false,
        }
    );
    assert_eq!(r[0].architecture, "aarch64");
    assert_eq!(r[0].aliases, "");
    assert_ne!(r[0].id, x86_id, "one id per name and architecture");

    // A new digest; an alias leaves.
    emit(
        &store,
        PYTHON,
        "x86_64",
        &[
            ImageEvent::ImageUpdated {
                fields: fields("sha256:ccc"),
            },
            ImageEvent::ImageUnaliased {
                alias: "python:3.9-ubuntu20.04".into(),
            },
        ],
    )
    .await;
    runner.catch_up().await.unwrap();
    let r = rows(&db).await;
    assert_eq!(r[1].config_digest.as_deref(), Some("sha256:ccc"));
    assert_eq!(r[1].aliases, "python");
    assert!(r[1].created_before_modified);

    // Forgotten: its rows go; registered again it comes back with its id.
    emit(
        &store,
        PYTHON,
        "x86_64",
        &[
            ImageEvent::ImageUnaliased {
                alias: "python".into(),
            },
            ImageEvent::ImageForgotten,
        ],
    )
    .await;
    runner.catch_up().await.unwrap();
    let r = rows(&db).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].architecture, "aarch64");
    assert_eq!(alias_count(&db).await, 0);
    emit(
        &store,
        PYTHON,
        "x86_64",
        &[registered("x86_64", "sha256:ddd"), aliased("python")],
    )
    .await;
    runner.catch_up().await.unwrap();
    let r = rows(&db).await;
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].id, x86_id);
    assert_eq!(r[1].aliases, "python");

    // Other streams' events change nothing.
    manager_events::testing::emit(
        &store,
        "unique:image-alias:x".into(),
        "unique",
        &[manager_events::reservation::ReservationEvent::Claimed { holder: "h".into() }],
    )
    .await;
    runner.catch_up().await.unwrap();
    assert_eq!(rows(&db).await.len(), 2);

    // A rebuild gives the same rows.
    let before = rows(&db).await;
    runner.rebuild(&ImagesProjector, |_| {}).await.unwrap();
    assert_eq!(rows(&db).await, before);
}
