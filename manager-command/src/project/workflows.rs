//! Commands that span a project, its domain, its unique name and its members.

use manager_events::domain::MemberKind;
use manager_events::project::{ProjectFields, stream_id};
use manager_events::user::UserStatus;
use manager_events::{Problem, ProblemKind, reservation};
use uuid::Uuid;

use super::{Project, ProjectCommand};
use crate::domain::{Domain, DomainCommand};
use crate::handler::{Tx, Workflow};
use crate::reservation::{Reservation, ReservationCommand};
use crate::user::User;

fn name_key(fields: &ProjectFields) -> String {
    reservation::stream_id(
        "project-name",
        &format!("{}/{}", fields.domain_name, fields.name),
    )
}

/// Creates a project: joins its domain (which must exist and be active) and
/// claims its name within the domain (unique ignoring case), atomically.
#[derive(Debug, Clone)]
pub struct CreateProject {
    /// The new project's id.
    pub id: Uuid,
    /// Its fields.
    pub fields: ProjectFields,
}

impl Workflow for CreateProject {
    type Output = Uuid;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<Uuid, Problem> {
        let holder = stream_id(&self.id);
        tx.decide::<Project>(
            &holder,
            &ProjectCommand::Create {
                id: self.id,
                fields: self.fields.clone(),
            },
        )
        .await?;
        tx.decide::<Domain>(
            &crate::domain::stream_id(&self.fields.domain_name),
            &DomainCommand::AddMember {
                kind: MemberKind::Project,
                id: self.id.to_string(),
            },
        )
        .await?;
        tx.decide::<Reservation>(
            &name_key(&self.fields),
            &ReservationCommand::Claim {
                holder,
                what: "project name",
            },
        )
        .await?;
        Ok(self.id)
    }
}

/// Removes a project for good (refused while it has members): frees its name
/// and leaves its domain.
#[derive(Debug, Clone)]
pub struct PurgeProject {
    /// The project.
    pub id: Uuid,
}

impl Workflow for PurgeProject {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Problem> {
        let holder = stream_id(&self.id);
        let project = tx.load::<Project>(&holder).await?;
        let fields = project
            .live()
            .cloned()
            .ok_or_else(|| Problem::new(ProblemKind::ObjectNotFound("user group (or project)")))?;
        tx.decide::<Project>(&holder, &ProjectCommand::Purge)
            .await?;
        tx.decide::<Reservation>(&name_key(&fields), &ReservationCommand::Release { holder })
            .await?;
        tx.decide::<Domain>(
            &crate::domain::stream_id(&fields.domain_name),
            &DomainCommand::RemoveMember {
                kind: MemberKind::Project,
                id: self.id.to_string(),
            },
        )
        .await?;
        Ok(())
    }
}

/// Adds users to a project: each must exist, be active and belong to the
/// project's domain.
#[derive(Debug, Clone)]
pub struct AddProjectMembers {
    /// The project.
    pub id: Uuid,
    /// The users.
    pub users: Vec<Uuid>,
}

impl Workflow for AddProjectMembers {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Problem> {
        let project = tx.load::<Project>(&stream_id(&self.id)).await?;
        let domain = project
            .live()
            .map(|f| f.domain_name.clone())
            .ok_or_else(|| Problem::new(ProblemKind::ObjectNotFound("user group (or project)")))?;
        for user_uuid in &self.users {
            let user = tx.load::<User>(&crate::user::stream_id(user_uuid)).await?;
            let fields = user
                .live()
                .ok_or_else(|| Problem::new(ProblemKind::ObjectNotFound("user")))?;
            if fields.domain_name != domain {
                return Err(Problem::new(ProblemKind::GenericBadRequest).msg(format!(
                    "user {user_uuid} belongs to domain {:?}, not {domain:?}",
                    fields.domain_name
                )));
            }
            if fields.status != UserStatus::Active {
                return Err(Problem::new(ProblemKind::GenericBadRequest)
                    .msg(format!("user {user_uuid} is not active")));
            }
            tx.decide::<Project>(&stream_id(&self.id), &ProjectCommand::AddMember(*user_uuid))
                .await?;
        }
        Ok(())
    }
}

/// Removes users from a project.
#[derive(Debug, Clone)]
pub struct RemoveProjectMembers {
    /// The project.
    pub id: Uuid,
    /// The users.
    pub users: Vec<Uuid>,
}

impl Workflow for RemoveProjectMembers {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Problem> {
        for user_uuid in &self.users {
            tx.decide::<Project>(
                &stream_id(&self.id),
                &ProjectCommand::RemoveMember(*user_uuid),
            )
            .await?;
        }
        Ok(())
    }
}
