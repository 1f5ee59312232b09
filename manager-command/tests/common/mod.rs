//! Setup shared by the command-side integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use manager_command::domain::{self, Domain, DomainCommand, DomainFields};
use manager_command::handler::CommandHandler;
use manager_command::user::{CreateUser, UserFields, UserRole, UserStatus};
use manager_events::EventMetadata;
use uuid::Uuid;

/// Creates active domains.
pub async fn domains(handler: &CommandHandler, names: &[&str]) {
    for name in names {
        handler
            .execute::<Domain>(
                &domain::stream_id(name),
                DomainCommand::Create {
                    name: (*name).into(),
                    fields: DomainFields {
                        is_active: true,
                        ..Default::default()
                    },
                },
                EventMetadata::default(),
            )
            .await
            .unwrap();
    }
}

/// The fields of an active, plain user.
pub fn user_fields(email: &str, username: &str, domain: &str) -> UserFields {
    UserFields {
        username: username.into(),
        email: email.into(),
        full_name: String::new(),
        description: String::new(),
        need_password_change: false,
        status: UserStatus::Active,
        role: UserRole::User,
        domain_name: domain.into(),
        resource_policy: "default".into(),
        allowed_client_ip: None,
        totp_activated: false,
        sudo_session_enabled: false,
    }
}

/// A user-creation workflow with a fresh id.
pub fn new_user(email: &str, username: &str, domain: &str) -> CreateUser {
    CreateUser {
        uuid: Uuid::new_v4(),
        fields: user_fields(email, username, domain),
        password_hash: "$argon2id$test".into(),
    }
}

/// Creates a user and returns its id.
pub async fn user(handler: &CommandHandler, email: &str, domain: &str) -> Uuid {
    let create = new_user(email, email, domain);
    handler
        .transact(&create, EventMetadata::default())
        .await
        .unwrap();
    create.uuid
}
