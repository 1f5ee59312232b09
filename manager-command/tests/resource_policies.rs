//! User and project resource policies and resource presets against the real
//! event store: a policy still named by a user or a project cannot be
//! deleted; one nobody uses can.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use manager_command::handler::CommandHandler;
use manager_command::project::{
    CreateProject, Project, ProjectCommand, ProjectFields, ProjectPatch,
};
use manager_command::project_policy::{
    self, ProjectPolicy, ProjectPolicyCommand, delete_project_policy,
};
use manager_command::resource_preset::{self, ResourcePreset, ResourcePresetCommand};
use manager_command::user::{User, UserCommand, UserPatch};
use manager_command::user_policy::{self, UserPolicy, UserPolicyCommand, delete_user_policy};
use manager_events::testing::TestDb;
use manager_events::{EventMetadata, ProblemKind};
use manager_projections::ProjectionRunner;
use uuid::Uuid;

async fn setup() -> (TestDb, CommandHandler) {
    let db = TestDb::new().await;
    let handler = CommandHandler::new(db.store().await);
    common::domains(&handler, &["default"]).await;
    for name in ["default", "spare"] {
        handler
            .execute::<UserPolicy>(
                &user_policy::stream_id(name),
                UserPolicyCommand::Create {
                    name: name.into(),
                    fields: user_policy::default_fields(),
                },
                EventMetadata::default(),
            )
            .await
            .unwrap();
        handler
            .execute::<ProjectPolicy>(
                &project_policy::stream_id(name),
                ProjectPolicyCommand::Create {
                    name: name.into(),
                    fields: project_policy::default_fields(),
                },
                EventMetadata::default(),
            )
            .await
            .unwrap();
    }
    (db, handler)
}

async fn catch_up(handler: &CommandHandler) {
    ProjectionRunner::new(handler.store().clone(), manager_projections::all(), 100)
        .catch_up()
        .await
        .unwrap();
}

fn msg(p: &manager_events::Problem) -> &str {
    p.msg.as_deref().unwrap_or("")
}

#[tokio::test]
async fn a_user_policy_in_use_cannot_be_deleted() {
    let (_db, handler) = setup().await;
    let uuid = common::user(&handler, "alice@example.com", "default").await;
    catch_up(&handler).await;

    let p = delete_user_policy(&handler, "default", EventMetadata::default())
        .await
        .unwrap_err();
    assert_eq!((p.kind, p.status()), (ProblemKind::GenericBadRequest, 400));
    assert!(
        msg(&p).contains("users still use the user resource policy"),
        "{p}"
    );
    delete_user_policy(&handler, "spare", EventMetadata::default())
        .await
        .unwrap();
    let p = delete_user_policy(&handler, "spare", EventMetadata::default())
        .await
        .unwrap_err();
    assert_eq!(p.kind, ProblemKind::ObjectNotFound("user resource policy"));

    // Once the user moves to another policy, the old one can go.
    handler
        .execute::<UserPolicy>(
            &user_policy::stream_id("other"),
            UserPolicyCommand::Create {
                name: "other".into(),
                fields: user_policy::default_fields(),
            },
            EventMetadata::default(),
        )
        .await
        .unwrap();
    handler
        .execute::<User>(
            &manager_command::user::stream_id(&uuid),
            UserCommand::Modify(UserPatch {
                resource_policy: Some("other".into()),
                ..Default::default()
            }),
            EventMetadata::default(),
        )
        .await
        .unwrap();
    catch_up(&handler).await;
    delete_user_policy(&handler, "default", EventMetadata::default())
        .await
        .unwrap();
    let (policy, _) = handler
        .load::<UserPolicy>(&user_policy::stream_id("default"))
        .await
        .unwrap();
    assert!(policy.live().is_none());
}

#[tokio::test]
async fn a_project_policy_in_use_cannot_be_deleted() {
    let (_db, handler) = setup().await;
    let id = Uuid::new_v4();
    let create = CreateProject {
        id,
        fields: ProjectFields {
            name: "research".into(),
            domain_name: "default".into(),
            description: String::new(),
            is_active: true,
            total_resource_slots: Default::default(),
            allowed_vfolder_hosts: Default::default(),
            integration_id: None,
            resource_policy: "default".into(),
        },
    };
    handler
        .transact(&create, EventMetadata::default())
        .await
        .unwrap();
    catch_up(&handler).await;

    let p = delete_project_policy(&handler, "default", EventMetadata::default())
        .await
        .unwrap_err();
    assert_eq!(p.status(), 400);
    assert!(
        msg(&p).contains("projects still use the project resource policy"),
        "{p}"
    );
    delete_project_policy(&handler, "spare", EventMetadata::default())
        .await
        .unwrap();

    handler
        .execute::<Project>(
            &manager_command::project::stream_id(&id),
            ProjectCommand::Modify(ProjectPatch {
                resource_policy: Some("elsewhere".into()),
                ..Default::default()
            }),
            EventMetadata::default(),
        )
        .await
        .unwrap();
    catch_up(&handler).await;
    delete_project_policy(&handler, "default", EventMetadata::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn presets_are_created_modified_and_deleted_through_the_handler() {
    let (_db, handler) = setup().await;
    let id = resource_preset::stream_id("01-small");
    let create = |fields| ResourcePresetCommand::Create {
        name: "01-small".into(),
        fields,
    };
    handler
        .execute::<ResourcePreset>(
            &id,
            create(resource_preset::fields("8", "34359738368", None)),
            EventMetadata::default(),
        )
        .await
        .unwrap();
    let p: manager_events::Problem = handler
        .execute::<ResourcePreset>(
            &id,
            create(resource_preset::fields("8", "34359738368", None)),
            EventMetadata::default(),
        )
        .await
        .unwrap_err()
        .into();
    assert_eq!(p.kind, ProblemKind::GenericBadRequest);
    let p: manager_events::Problem = handler
        .execute::<ResourcePreset>(
            &id,
            ResourcePresetCommand::Modify(resource_preset::fields("8", "1024", Some(4096))),
            EventMetadata::default(),
        )
        .await
        .unwrap_err()
        .into();
    assert_eq!(p.kind, ProblemKind::InvalidApiParams);
    assert!(msg(&p).contains("shared_memory"), "{p}");
    let done = handler
        .execute::<ResourcePreset>(&id, ResourcePresetCommand::Delete, EventMetadata::default())
        .await
        .unwrap();
    assert!(done.state.live().is_none());
}
