//! Commands that span an image and the reservations of its aliases.
//!
//! Every alias an image carries is a reservation held by the image's stream
//! id; these workflows decide the image's event and the reservation's in
//! one atomic append, so the two never disagree.

use manager_events::image::{ALIAS_SCOPE, ImageFields, stream_id};
use manager_events::{Problem, ProblemKind, reservation};

use super::{Image, ImageCommand};
use crate::handler::{Tx, Workflow};
use crate::reservation::{Reservation, ReservationCommand};

/// The reservation stream of an alias.
pub(super) fn alias_key(alias: &str) -> String {
    reservation::stream_id(ALIAS_SCOPE, alias)
}

/// Lets `alias` name the image at `holder` (its stream id): the image's
/// `ImageAliased` and the reservation's claim. Nothing to do if it does
/// already; refused if the alias names another image.
async fn alias(tx: &mut Tx<'_>, holder: &str, alias: &str) -> Result<(), Problem> {
    tx.decide::<Image>(holder, &ImageCommand::Alias(alias.to_owned()))
        .await?;
    tx.decide::<Reservation>(
        &alias_key(alias),
        &ReservationCommand::Claim {
            holder: holder.to_owned(),
            what: "image alias",
        },
    )
    .await?;
    Ok(())
}

/// Stops `alias` from naming the image at `holder` and frees it.
async fn unalias(tx: &mut Tx<'_>, holder: &str, alias: &str) -> Result<(), Problem> {
    tx.decide::<Image>(holder, &ImageCommand::Unalias(alias.to_owned()))
        .await?;
    tx.decide::<Reservation>(
        &alias_key(alias),
        &ReservationCommand::Release {
            holder: holder.to_owned(),
        },
    )
    .await?;
    Ok(())
}

/// Registers an image with its aliases, atomically. Idempotent: an image
/// registered with the same fields and aliases appends nothing (aliases it
/// has that are not listed are kept). Answers the image's stream id.
#[derive(Debug, Clone)]
pub struct RegisterImage {
    /// Canonical name, `registry/repo:tag`.
    pub canonical: String,
    /// CPU architecture.
    pub architecture: String,
    /// Its fields.
    pub fields: ImageFields,
    /// Aliases that should name it.
    pub aliases: Vec<String>,
}

impl Workflow for RegisterImage {
    type Output = String;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<String, Problem> {
        let holder = stream_id(&self.canonical, &self.architecture);
        tx.decide::<Image>(
            &holder,
            &ImageCommand::Register {
                canonical: self.canonical.clone(),
                architecture: self.architecture.clone(),
                fields: self.fields.clone(),
            },
        )
        .await?;
        for a in &self.aliases {
            alias(tx, &holder, a).await?;
        }
        Ok(holder)
    }
}

/// Lets an alias name a registered image (reference: `alias_image`).
/// Refused while the alias names another image. Answers the image's
/// stream id.
#[derive(Debug, Clone)]
pub struct AliasImage {
    /// The alias.
    pub alias: String,
    /// The image's canonical name.
    pub canonical: String,
    /// The image's architecture.
    pub architecture: String,
}

impl Workflow for AliasImage {
    type Output = String;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<String, Problem> {
        let holder = stream_id(&self.canonical, &self.architecture);
        alias(tx, &holder, &self.alias).await?;
        Ok(holder)
    }
}

/// Removes an alias from the image it names and frees it (reference:
/// `dealias_image`). 404 when no image has it. Answers the stream id of the
/// image that had it.
#[derive(Debug, Clone)]
pub struct UnaliasImage {
    /// The alias.
    pub alias: String,
}

impl Workflow for UnaliasImage {
    type Output = String;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<String, Problem> {
        let held = tx.load::<Reservation>(&alias_key(&self.alias)).await?;
        let holder = held
            .holder
            .ok_or_else(|| Problem::new(ProblemKind::ObjectNotFound("image alias")))?;
        unalias(tx, &holder, &self.alias).await?;
        Ok(holder)
    }
}

/// Forgets an image: removes and frees its aliases, then forgets it, in one
/// append. Forgetting a forgotten image appends nothing.
#[derive(Debug, Clone)]
pub struct ForgetImage {
    /// The image's canonical name.
    pub canonical: String,
    /// The image's architecture.
    pub architecture: String,
}

impl Workflow for ForgetImage {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Problem> {
        let holder = stream_id(&self.canonical, &self.architecture);
        let image = tx.load::<Image>(&holder).await?;
        for a in &image.aliases {
            unalias(tx, &holder, a).await?;
        }
        tx.decide::<Image>(&holder, &ImageCommand::Forget).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The workflows and the resolver against the real event store.

    use manager_events::image::SlotLimits;
    use manager_events::testing::TestDb;
    use manager_events::{EventMetadata, ProblemKind};

    use super::*;
    use crate::handler::CommandHandler;
    use crate::image::resolve_image;

    const PYTHON: &str = "cr.backend.ai/stable/python:3.9-ubuntu20.04";
    const NODE: &str = "cr.backend.ai/stable/node:18";

    fn fields(canonical: &str) -> ImageFields {
        let (registry, rest) = canonical.split_once('/').unwrap();
        let (image, tag) = rest.rsplit_once(':').unwrap();
        ImageFields {
            registry: registry.into(),
            image: image.into(),
            tag: tag.into(),
            kind: "compute".into(),
            resources: [(
                "mem".to_owned(),
                SlotLimits {
                    min: "268435456".into(),
                    max: None,
                },
            )]
            .into(),
            ..ImageFields::default()
        }
    }

    fn register(canonical: &str, architecture: &str, aliases: &[&str]) -> RegisterImage {
        RegisterImage {
            canonical: canonical.into(),
            architecture: architecture.into(),
            fields: fields(canonical),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    async fn resolved(h: &CommandHandler, reference: &str, arch: &str) -> Option<String> {
        resolve_image(h, reference, arch)
            .await
            .unwrap()
            .map(|(id, image)| {
                assert_eq!(id, stream_id(&image.canonical, &image.architecture));
                format!("{}@{}", image.canonical, image.architecture)
            })
    }

    #[tokio::test]
    async fn aliases_name_one_image_at_a_time() {
        let db = TestDb::new().await;
        let h = CommandHandler::new(db.store().await);
        let m = EventMetadata::default;
        let first = h
            .transact(&register(PYTHON, "x86_64", &["python", "py"]), m())
            .await
            .unwrap();
        assert_eq!(
            first.output.as_deref(),
            Some(stream_id(PYTHON, "x86_64").as_str())
        );
        // Registering the same again appends nothing.
        let again = h
            .transact(&register(PYTHON, "x86_64", &["python", "py"]), m())
            .await
            .unwrap();
        assert_eq!(again.position, None);
        // Another image cannot take an alias in use (any case), nor is it
        // registered half: the append is all or nothing.
        let p = h
            .transact(&register(NODE, "x86_64", &["node", "PYTHON"]), m())
            .await
            .unwrap_err();
        assert!(
            p.msg
                .as_deref()
                .unwrap_or("")
                .contains("image alias is already in use"),
            "{p}"
        );
        assert_eq!(resolved(&h, NODE, "x86_64").await, None);
        assert_eq!(resolved(&h, "node", "x86_64").await, None);
        h.transact(&register(NODE, "x86_64", &["node"]), m())
            .await
            .unwrap();
        let p = h
            .transact(
                &AliasImage {
                    alias: "py".into(),
                    canonical: NODE.into(),
                    architecture: "x86_64".into(),
                },
                m(),
            )
            .await
            .unwrap_err();
        assert_eq!(p.kind, ProblemKind::GenericBadRequest, "{p}");
        // Moved: freed from one image, then taken by the other.
        let had = h
            .transact(&UnaliasImage { alias: "Py".into() }, m())
            .await
            .unwrap();
        assert_eq!(
            had.output.as_deref(),
            Some(stream_id(PYTHON, "x86_64").as_str())
        );
        assert_eq!(resolved(&h, "py", "x86_64").await, None);
        h.transact(
            &AliasImage {
                alias: "py".into(),
                canonical: NODE.into(),
                architecture: "x86_64".into(),
            },
            m(),
        )
        .await
        .unwrap();
        assert_eq!(
            resolved(&h, "py", "").await.as_deref(),
            Some("cr.backend.ai/stable/node:18@x86_64")
        );
        let p = h
            .transact(
                &UnaliasImage {
                    alias: "nope".into(),
                },
                m(),
            )
            .await
            .unwrap_err();
        assert_eq!(p.kind, ProblemKind::ObjectNotFound("image alias"));
        // Aliasing an image that does not exist is refused.
        let p = h
            .transact(
                &AliasImage {
                    alias: "ghost".into(),
                    canonical: "cr.backend.ai/stable/ghost:1".into(),
                    architecture: "x86_64".into(),
                },
                m(),
            )
            .await
            .unwrap_err();
        assert_eq!(p.kind, ProblemKind::ObjectNotFound("environment image"));
    }

    #[tokio::test]
    async fn references_resolve_by_alias_then_canonical_name() {
        let db = TestDb::new().await;
        let h = CommandHandler::new(db.store().await);
        let m = EventMetadata::default;
        h.transact(
            &register(PYTHON, "x86_64", &["python", "python:3.9-ubuntu20.04"]),
            m(),
        )
        .await
        .unwrap();
        h.transact(&register(PYTHON, "aarch64", &[]), m())
            .await
            .unwrap();
        let x86 = Some(format!("{PYTHON}@x86_64"));
        let arm = Some(format!("{PYTHON}@aarch64"));
        assert_eq!(resolved(&h, "python", "x86_64").await, x86);
        assert_eq!(resolved(&h, " Python ", "x86_64").await, x86);
        assert_eq!(resolved(&h, "python:3.9-ubuntu20.04", "x86_64").await, x86);
        assert_eq!(resolved(&h, PYTHON, "x86_64").await, x86);
        assert_eq!(resolved(&h, PYTHON, "").await, x86);
        // The alias names the x86_64 image; the same name is built for arm.
        assert_eq!(resolved(&h, "python", "aarch64").await, arm);
        assert_eq!(resolved(&h, PYTHON, "aarch64").await, arm);
        // Nothing is guessed.
        for unknown in [
            "python:3.10",
            "stable/python:3.9-ubuntu20.04",
            "cr.backend.ai/stable/python:3.10",
            "",
            "not a name at all",
        ] {
            assert_eq!(resolved(&h, unknown, "x86_64").await, None, "{unknown:?}");
        }
        assert_eq!(resolved(&h, "python", "riscv64").await, None);
        // The state carries what session creation needs.
        let (_, image) = resolve_image(&h, "python", "x86_64")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            image.min_of("mem"),
            manager_events::slots::SlotAmount::from_int(268_435_456)
        );
        assert_eq!(image.registry(), "cr.backend.ai");

        // Forgotten images do not resolve, and their aliases are free.
        h.transact(
            &ForgetImage {
                canonical: PYTHON.into(),
                architecture: "x86_64".into(),
            },
            m(),
        )
        .await
        .unwrap();
        assert_eq!(resolved(&h, "python", "x86_64").await, None);
        assert_eq!(resolved(&h, PYTHON, "x86_64").await, None);
        assert_eq!(resolved(&h, PYTHON, "aarch64").await, arm);
        let (held, _) = h.load::<Reservation>(&alias_key("python")).await.unwrap();
        assert_eq!(held.holder, None);
        // Registered again (with its aliases), it is back.
        h.transact(&register(PYTHON, "x86_64", &["python"]), m())
            .await
            .unwrap();
        assert_eq!(resolved(&h, "python", "x86_64").await, x86);
    }
}
