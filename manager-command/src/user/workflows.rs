//! Commands that span a user, its domain and its unique values.

use manager_events::domain::MemberKind;
use manager_events::user::{UserFields, stream_id};
use manager_events::{Problem, ProblemKind, reservation};
use uuid::Uuid;

use crate::domain::{Domain, DomainCommand};
use crate::handler::{Tx, Workflow};
use crate::keypair::{self, Keypair, KeypairCommand};
use crate::reservation::{Reservation, ReservationCommand};

use super::{User, UserCommand};

/// Creates a user: joins its domain (which must exist and be active), claims
/// its email and username (unique, case-insensitively), creates the user —
/// all in one atomic append.
#[derive(Debug, Clone)]
pub struct CreateUser {
    /// The new user's id.
    pub uuid: Uuid,
    /// Its fields.
    pub fields: UserFields,
    /// Argon2 hash of its password (see [`super::password::hash`]).
    pub password_hash: String,
}

impl Workflow for CreateUser {
    type Output = Uuid;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<Uuid, Problem> {
        let holder = stream_id(&self.uuid);
        // The user's own checks first, so that bad input is reported as such.
        tx.decide::<User>(
            &holder,
            &UserCommand::Create {
                uuid: self.uuid,
                fields: self.fields.clone(),
                password_hash: self.password_hash.clone(),
            },
        )
        .await?;
        tx.decide::<Domain>(
            &crate::domain::stream_id(&self.fields.domain_name),
            &DomainCommand::AddMember {
                kind: MemberKind::User,
                id: self.uuid.to_string(),
            },
        )
        .await?;
        for (scope, value, what) in [
            ("user-email", &self.fields.email, "email"),
            ("user-name", &self.fields.username, "username"),
        ] {
            tx.decide::<Reservation>(
                &reservation::stream_id(scope, value),
                &ReservationCommand::Claim {
                    holder: holder.clone(),
                    what,
                },
            )
            .await?;
        }
        Ok(self.uuid)
    }
}

/// Soft-deletes a user (status `deleted`).
#[derive(Debug, Clone)]
pub struct DeleteUser {
    /// The user.
    pub uuid: Uuid,
}

impl Workflow for DeleteUser {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Problem> {
        tx.decide::<User>(&stream_id(&self.uuid), &UserCommand::Delete)
            .await?;
        Ok(())
    }
}

/// Removes a user for good: deletes its keypairs, frees its email and
/// username and leaves its domain. Its output is the access keys whose data
/// keys the caller must shred once it has committed
/// ([`manager_events::secrets::KeyStore::shred`]).
#[derive(Debug, Clone)]
pub struct PurgeUser {
    /// The user.
    pub uuid: Uuid,
}

impl Workflow for PurgeUser {
    type Output = Vec<String>;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<Vec<String>, Problem> {
        let holder = stream_id(&self.uuid);
        let user = tx.load::<User>(&holder).await?;
        let fields = user
            .live()
            .cloned()
            .ok_or_else(|| Problem::new(ProblemKind::ObjectNotFound("user")))?;
        let access_keys: Vec<String> = user.keypairs.iter().cloned().collect();
        for ak in &access_keys {
            tx.decide::<Keypair>(&keypair::stream_id(ak), &KeypairCommand::Delete)
                .await?;
        }
        tx.decide::<User>(&holder, &UserCommand::Purge).await?;
        for (scope, value) in [
            ("user-email", &fields.email),
            ("user-name", &fields.username),
        ] {
            tx.decide::<Reservation>(
                &reservation::stream_id(scope, value),
                &ReservationCommand::Release {
                    holder: holder.clone(),
                },
            )
            .await?;
        }
        tx.decide::<Domain>(
            &crate::domain::stream_id(&fields.domain_name),
            &DomainCommand::RemoveMember {
                kind: MemberKind::User,
                id: self.uuid.to_string(),
            },
        )
        .await?;
        Ok(access_keys)
    }
}
