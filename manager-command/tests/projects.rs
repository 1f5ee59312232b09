//! Project workflows against the real event store.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use manager_command::handler::CommandHandler;
use manager_command::project::{
    AddProjectMembers, CreateProject, ProjectFields, PurgeProject, RemoveProjectMembers,
};
use manager_events::testing::TestDb;
use manager_events::{EventMetadata, ProblemKind};
use uuid::Uuid;

fn project(name: &str, domain: &str) -> CreateProject {
    CreateProject {
        id: Uuid::new_v4(),
        fields: ProjectFields {
            name: name.into(),
            domain_name: domain.into(),
            description: String::new(),
            is_active: true,
            total_resource_slots: Default::default(),
            allowed_vfolder_hosts: Default::default(),
            integration_id: None,
            resource_policy: "default".into(),
        },
    }
}

mod common;

use common::user;

async fn setup() -> (TestDb, CommandHandler) {
    let db = TestDb::new().await;
    let handler = CommandHandler::new(db.store().await);
    common::domains(&handler, &["default", "other"]).await;
    (db, handler)
}

#[tokio::test]
async fn project_names_are_unique_per_domain_and_members_come_from_it() {
    let (_db, handler) = setup().await;
    let research = project("Research", "default");
    handler
        .transact(&research, EventMetadata::default())
        .await
        .unwrap();
    let p = handler
        .transact(&project("research", "default"), EventMetadata::default())
        .await
        .unwrap_err();
    assert!(
        p.msg
            .as_deref()
            .unwrap_or("")
            .contains("project name is already in use"),
        "{p}"
    );
    handler
        .transact(&project("research", "other"), EventMetadata::default())
        .await
        .unwrap();
    let p = handler
        .transact(&project("x", "nowhere"), EventMetadata::default())
        .await
        .unwrap_err();
    assert_eq!(p.kind, ProblemKind::ObjectNotFound("domain"));

    let alice = user(&handler, "alice@example.com", "default").await;
    let mallory = user(&handler, "mallory@example.com", "other").await;
    handler
        .transact(
            &AddProjectMembers {
                id: research.id,
                users: vec![alice],
            },
            EventMetadata::default(),
        )
        .await
        .unwrap();
    let p = handler
        .transact(
            &AddProjectMembers {
                id: research.id,
                users: vec![mallory],
            },
            EventMetadata::default(),
        )
        .await
        .unwrap_err();
    assert!(
        p.msg.as_deref().unwrap_or("").contains("belongs to domain"),
        "{p}"
    );

    // A project with members cannot be purged; once empty it can, and its
    // name is free again.
    let p = handler
        .transact(&PurgeProject { id: research.id }, EventMetadata::default())
        .await
        .unwrap_err();
    assert!(p.msg.as_deref().unwrap_or("").contains("1 member"), "{p}");
    handler
        .transact(
            &RemoveProjectMembers {
                id: research.id,
                users: vec![alice],
            },
            EventMetadata::default(),
        )
        .await
        .unwrap();
    handler
        .transact(&PurgeProject { id: research.id }, EventMetadata::default())
        .await
        .unwrap();
    handler
        .transact(&project("research", "default"), EventMetadata::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn scaling_groups_serve_existing_targets_and_stay_while_associated() {
    use manager_command::scaling_group::{
        self, AssociateScalingGroup, ScalingGroup, ScalingGroupCommand, default_fields,
    };
    use manager_events::scaling_group::ScalingGroupTarget;
    let (_db, handler) = setup().await;
    let id = scaling_group::stream_id("gpu");
    handler
        .execute::<ScalingGroup>(
            &id,
            ScalingGroupCommand::Create {
                name: "gpu".into(),
                fields: default_fields(),
            },
            EventMetadata::default(),
        )
        .await
        .unwrap();
    let to = |target| AssociateScalingGroup {
        name: "gpu".into(),
        target,
    };
    let p = handler
        .transact(
            &to(ScalingGroupTarget::Domain("nowhere".into())),
            EventMetadata::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(p.status(), 404);
    let p = handler
        .transact(
            &to(ScalingGroupTarget::Keypair("AKIANOBODY".into())),
            EventMetadata::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(p.status(), 404);
    handler
        .transact(
            &to(ScalingGroupTarget::Domain("default".into())),
            EventMetadata::default(),
        )
        .await
        .unwrap();
    let err = handler
        .execute::<ScalingGroup>(&id, ScalingGroupCommand::Delete, EventMetadata::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("still associated"), "{err}");
}
