//! Commands that span a keypair and its owner.

use manager_events::keypair::{KeypairFields, stream_id};
use manager_events::secrets::KeyStore;
use manager_events::user::UserStatus;
use manager_events::{Problem, ProblemKind};
use rand::Rng;
use uuid::Uuid;

use super::{Keypair, KeypairCommand};
use crate::handler::{Tx, Workflow};
use crate::policy::KeypairPolicy;
use crate::reservation::Reservation;
use crate::user::{User, UserCommand};

/// A new access key in the reference's shape: `AKIA` and 16 letters or digits.
pub fn generate_access_key() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..16)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("AKIA{tail}")
}

/// A new secret key: 40 characters of base64's alphabet (240 random bits).
pub fn generate_secret_key() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::rng();
    (0..40)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// What a new keypair is to be.
#[derive(Debug, Clone)]
pub struct NewKeypair {
    /// The access key.
    pub access_key: String,
    /// The owner.
    pub user_uuid: Uuid,
    /// May sign requests.
    pub is_active: bool,
    /// Acts with admin rights.
    pub is_admin: bool,
    /// Keypair resource policy.
    pub resource_policy: String,
    /// Requests per 15 minutes (0: unlimited).
    pub rate_limit: i64,
}

/// Creates a keypair for an active user; the user's first keypair becomes its
/// main access key. Build it with [`CreateKeypair::prepare`], which seals the
/// secret before any decision is made.
#[derive(Debug, Clone)]
pub struct CreateKeypair {
    new: NewKeypair,
    sealed_secret_key: String,
    /// When set, the owner is the user holding this e-mail (looked up in
    /// the attempt, so the lookup is checked like every other read).
    owner_email: Option<String>,
}

impl CreateKeypair {
    /// Seals `secret_key` with a data key stored for the access key (reused if
    /// an earlier attempt stored one), ready to run.
    pub async fn prepare(
        keys: &KeyStore,
        new: NewKeypair,
        secret_key: &str,
    ) -> Result<Self, Problem> {
        if !super::aggregate::valid_access_key(&new.access_key) {
            return Err(Problem::new(ProblemKind::InvalidApiParams)
                .msg("invalid access_key: use 1-20 ASCII letters and digits"));
        }
        if secret_key.is_empty() || secret_key.len() > 255 {
            return Err(Problem::new(ProblemKind::InvalidApiParams)
                .msg("invalid secret_key: use 1-255 characters"));
        }
        let dek = keys
            .data_key_for_new(&new.access_key)
            .await
            .map_err(|e| Problem::new(ProblemKind::ServiceUnavailable).msg(e.to_string()))?;
        let sealed_secret_key = dek.seal(&new.access_key, secret_key);
        Ok(CreateKeypair {
            new,
            sealed_secret_key,
            owner_email: None,
        })
    }

    /// Makes the owner the user holding `email` (instead of the prepared
    /// user UUID).
    pub fn owned_by_email(mut self, email: String) -> Self {
        self.owner_email = Some(email);
        self
    }
}

impl Workflow for CreateKeypair {
    type Output = String;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<String, Problem> {
        let new = &self.new;
        let user_uuid = match &self.owner_email {
            None => new.user_uuid,
            Some(email) => {
                let held = tx
                    .load::<Reservation>(&manager_events::reservation::stream_id(
                        "user-email",
                        email,
                    ))
                    .await?;
                held.holder
                    .as_deref()
                    .and_then(|h| h.strip_prefix("user:"))
                    .and_then(|u| u.parse().ok())
                    .ok_or_else(|| {
                        Problem::new(ProblemKind::ObjectNotFound("user"))
                            .msg(format!("no user {email:?}"))
                    })?
            }
        };
        let user_stream = crate::user::stream_id(&user_uuid);
        let user = tx.load::<User>(&user_stream).await?;
        let owner = user
            .live()
            .ok_or_else(|| Problem::new(ProblemKind::ObjectNotFound("user")))?;
        if owner.status != UserStatus::Active {
            return Err(Problem::new(ProblemKind::GenericBadRequest).msg(format!(
                "keypairs belong to active users; this user is {}",
                owner.status.as_str()
            )));
        }
        // The policy must exist. Loading it makes its version a precondition
        // of the append, so a concurrent deletion of the policy conflicts.
        let policy = tx
            .load::<KeypairPolicy>(&crate::policy::stream_id(&new.resource_policy))
            .await?;
        if policy.live().is_none() {
            return Err(
                Problem::new(ProblemKind::ObjectNotFound("keypair resource policy")).msg(format!(
                    "no keypair resource policy named {:?}",
                    new.resource_policy
                )),
            );
        }
        let fields = KeypairFields {
            user_uuid,
            user_email: owner.email.clone(),
            is_active: new.is_active,
            is_admin: new.is_admin,
            resource_policy: new.resource_policy.clone(),
            rate_limit: new.rate_limit,
        };
        // Access keys are random (or derived from an idempotency key): a
        // taken one is caught by the append and refused on the next attempt.
        tx.presume_new::<Keypair>(&stream_id(&new.access_key));
        tx.decide::<Keypair>(
            &stream_id(&new.access_key),
            &KeypairCommand::Create {
                access_key: new.access_key.clone(),
                fields,
                sealed_secret_key: self.sealed_secret_key.clone(),
            },
        )
        .await?;
        tx.decide::<User>(
            &user_stream,
            &UserCommand::AddKeypair(new.access_key.clone()),
        )
        .await?;
        if user.main_access_key.is_none() {
            tx.decide::<User>(
                &user_stream,
                &UserCommand::SetMainAccessKey(Some(new.access_key.clone())),
            )
            .await?;
        }
        Ok(new.access_key.clone())
    }
}

/// Deletes a keypair (and clears it as its owner's main key). After it
/// commits, shred its data key with [`KeyStore::shred`].
#[derive(Debug, Clone)]
pub struct DeleteKeypair {
    /// The access key.
    pub access_key: String,
}

impl Workflow for DeleteKeypair {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Problem> {
        let decided = tx
            .decide::<Keypair>(&stream_id(&self.access_key), &KeypairCommand::Delete)
            .await?;
        if let Some(fields) = &decided.state.fields {
            let user_stream = crate::user::stream_id(&fields.user_uuid);
            let user = tx.load::<User>(&user_stream).await?;
            if user.live().is_some() {
                tx.decide::<User>(
                    &user_stream,
                    &UserCommand::RemoveKeypair(self.access_key.clone()),
                )
                .await?;
                if user.main_access_key.as_deref() == Some(self.access_key.as_str()) {
                    tx.decide::<User>(&user_stream, &UserCommand::SetMainAccessKey(None))
                        .await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_reference_shape() {
        let ak = generate_access_key();
        assert!(
            ak.starts_with("AKIA")
                && ak.len() == 20
                && super::super::aggregate::valid_access_key(&ak)
        );
        let sk = generate_secret_key();
        assert_eq!(sk.len(), 40);
        assert_ne!(generate_secret_key(), sk);
    }
}
