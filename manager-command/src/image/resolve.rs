//! Resolving what a client names an image by (see the module docs of
//! [`super`] for the rules).

use std::future::Future;

use manager_events::Problem;
use manager_events::image::{DEFAULT_ARCHITECTURE, stream_id};

use super::workflows::alias_key;
use super::{Image, parse_canonical};
use crate::handler::{CommandHandler, Tx};
use crate::reservation::Reservation;

/// Where the resolver reads aggregates from: the log through the handler,
/// or a workflow's attempt (whose reads are checked when it commits).
trait Lookup: Send {
    fn image(&mut self, stream_id: &str) -> impl Future<Output = Result<Image, Problem>> + Send;
    fn holder(
        &mut self,
        alias: &str,
    ) -> impl Future<Output = Result<Option<String>, Problem>> + Send;
}

struct ByHandler<'a>(&'a CommandHandler);

impl Lookup for ByHandler<'_> {
    async fn image(&mut self, stream_id: &str) -> Result<Image, Problem> {
        Ok(self.0.load::<Image>(stream_id).await?.0)
    }

    async fn holder(&mut self, alias: &str) -> Result<Option<String>, Problem> {
        Ok(self
            .0
            .load::<Reservation>(&alias_key(alias))
            .await?
            .0
            .holder)
    }
}

impl Lookup for Tx<'_> {
    async fn image(&mut self, stream_id: &str) -> Result<Image, Problem> {
        self.load::<Image>(stream_id).await
    }

    async fn holder(&mut self, alias: &str) -> Result<Option<String>, Problem> {
        Ok(self.load::<Reservation>(&alias_key(alias)).await?.holder)
    }
}

async fn resolve<L: Lookup>(
    lookup: &mut L,
    reference: &str,
    architecture: &str,
) -> Result<Option<(String, Image)>, Problem> {
    let reference = reference.trim();
    let architecture = match architecture.trim() {
        "" => DEFAULT_ARCHITECTURE,
        a => a,
    };
    if reference.is_empty() {
        return Ok(None);
    }
    // 1. An alias.
    if let Some(holder) = lookup.holder(reference).await? {
        let image = lookup.image(&holder).await?;
        if image.live() && image.alias(reference).is_some() {
            if image.architecture == architecture {
                return Ok(Some((holder, image)));
            }
            // The same name built for the requested architecture.
            let sibling = stream_id(&image.canonical, architecture);
            let other = lookup.image(&sibling).await?;
            if other.live() {
                return Ok(Some((sibling, other)));
            }
        }
    }
    // 2. A canonical name, exactly as given (only if it is one: anything
    // else has no stream to read).
    if parse_canonical(reference).is_ok() {
        let id = stream_id(reference, architecture);
        if manager_events::append::validate_stream_id(&id).is_ok() {
            let image = lookup.image(&id).await?;
            if image.live() {
                return Ok(Some((id, image)));
            }
        }
    }
    Ok(None)
}

/// The image `reference` names for `architecture` (empty: `x86_64`), with
/// its stream id: an alias first, then a canonical name (see the module
/// docs of [`super`]). `None` when nothing live matches: unknown, or
/// forgotten. Reads the log (through the handler's cache, brought up to
/// date), not a read model, so an image registered a moment ago resolves.
pub async fn resolve_image(
    handler: &CommandHandler,
    reference: &str,
    architecture: &str,
) -> Result<Option<(String, Image)>, Problem> {
    resolve(&mut ByHandler(handler), reference, architecture).await
}

/// [`resolve_image`] inside a workflow: what it read (the alias's
/// reservation, the image) is checked when the workflow commits, so a
/// session is never created from an image forgotten or re-aliased in the
/// meantime.
pub async fn resolve_image_in(
    tx: &mut Tx<'_>,
    reference: &str,
    architecture: &str,
) -> Result<Option<(String, Image)>, Problem> {
    resolve(tx, reference, architecture).await
}
