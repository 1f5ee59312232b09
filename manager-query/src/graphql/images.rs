//! Images: `images(is_installed, is_operation)` and `image(reference,
//! architecture)` (API spec §5.3, §5.4), what `backend.ai admin image list`
//! reads.
//!
//! Scoping. Any authenticated caller may list. Superadmins see every
//! image; anyone else (admins, users and monitors alike) only the images
//! of the registries their domain allows (`allowed_docker_registries`, as
//! the reference's `filter_allowed`): a domain allowing none sees none.
//!
//! Filters, as the reference's `load_all`: `is_operation: true` keeps only
//! images whose `ai.backend.features` label mentions `operation`, `false`
//! only the others; left out it means `false`, an explicit `null` keeps
//! both. `is_installed: true` finds nothing and `false` everything: which
//! agents hold an image is not recorded yet, so every image answers
//! `installed: false` and `installed_agents: []`.
//!
//! `image(reference)` looks the reference up as `resolve_image` on the
//! write side does, in the read models: an alias first (the image it names,
//! or that image's name built for the requested architecture), then a
//! canonical name as given; `null` when nothing matches or the caller's
//! domain does not allow the image's registry.
//!
//! Every field is read from the read models, so responses may be kept by
//! the response cache (see `cache.rs`); a field that comes to ask agents or
//! Redis (`installed`) must keep them out of it.

use std::collections::BTreeMap;

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt as SqlBigInt, Bool, Jsonb, Nullable, Text, Uuid as SqlUuid};
use juniper::{FieldResult, GraphQLObject, Nullable as GqlNullable};
use manager_events::image::{DEFAULT_ARCHITECTURE, SlotLimits};
use manager_events::slots::SlotAmount;
use uuid::Uuid;

use super::Context;
use super::scalars::BigInt;
use super::sql::Conditions;
use crate::minilang::Param;

/// A key and its value (an image's label).
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(name = "KVPair", rename_all = "none")]
pub struct KvPair {
    /// The key.
    pub key: Option<String>,
    /// The value.
    pub value: Option<String>,
}

/// The bounds an image puts on one slot of its kernels.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct ResourceLimit {
    /// The slot (`cpu`, `mem`, `cuda.device`).
    pub key: Option<String>,
    /// The least a kernel may ask for (`mem` in bytes), `"0"` by default.
    pub min: Option<String>,
    /// The most a kernel may ask for, `"Infinity"` when unbounded.
    pub max: Option<String>,
}

/// A registered image.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct Image {
    /// Its id (derived from its name and architecture).
    pub id: Option<Uuid>,
    /// The repository within the registry (`stable/python`), as the
    /// reference's `name`.
    pub name: Option<String>,
    /// Same as `name`.
    pub humanized_name: Option<String>,
    /// The tag.
    pub tag: Option<String>,
    /// The registry's name.
    pub registry: Option<String>,
    /// CPU architecture.
    pub architecture: Option<String>,
    /// Built on an agent rather than pulled from a registry.
    pub is_local: Option<bool>,
    /// Content digest of the image config, when known.
    pub digest: Option<String>,
    /// Docker labels, by key.
    pub labels: Option<Vec<Option<KvPair>>>,
    /// The aliases naming it.
    pub aliases: Option<Vec<Option<String>>>,
    /// Size in bytes.
    pub size_bytes: Option<BigInt>,
    /// Slot bounds, by slot.
    pub resource_limits: Option<Vec<Option<ResourceLimit>>>,
    /// Accelerators it supports (its `ai.backend.accelerators` label).
    pub supported_accelerators: Option<Vec<Option<String>>>,
    /// Whether an agent holds it (not recorded yet: false).
    pub installed: Option<bool>,
    /// Agents holding it (not recorded yet: none).
    pub installed_agents: Option<Vec<Option<String>>>,
    /// Same as `digest` (legacy).
    pub hash: Option<String>,
}

const IMAGE_COLUMNS: &str = "i.id, i.name, i.architecture, i.registry, i.image, i.tag, \
    i.config_digest, i.size_bytes, i.is_local, i.labels, i.resources, \
    coalesce((SELECT array_agg(a.alias ORDER BY a.alias) FROM image_aliases a \
              WHERE a.image_id = i.id), '{}') AS aliases";

/// A row of `images` with its aliases.
#[derive(Debug, QueryableByName)]
struct ImageRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    #[allow(dead_code)]
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
    #[diesel(sql_type = SqlBigInt)]
    size_bytes: i64,
    #[diesel(sql_type = Bool)]
    is_local: bool,
    #[diesel(sql_type = Jsonb)]
    labels: serde_json::Value,
    #[diesel(sql_type = Jsonb)]
    resources: serde_json::Value,
    #[diesel(sql_type = Array<Text>)]
    aliases: Vec<String>,
}

/// An amount as the reference prints it, or the default when absent or
/// unreadable.
fn amount(text: Option<&str>, default: &str) -> String {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => SlotAmount::parse(t).map_or_else(|_| t.to_owned(), |a| a.to_string()),
        None => default.to_owned(),
    }
}

impl From<ImageRow> for Image {
    fn from(r: ImageRow) -> Self {
        let labels: BTreeMap<String, String> = serde_json::from_value(r.labels).unwrap_or_default();
        let resources: BTreeMap<String, SlotLimits> =
            serde_json::from_value(r.resources).unwrap_or_default();
        let accelerators = labels
            .get("ai.backend.accelerators")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Some(s.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let digest = r
            .config_digest
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        Image {
            id: Some(r.id),
            name: Some(r.image.clone()),
            humanized_name: Some(r.image),
            tag: Some(r.tag),
            registry: Some(r.registry),
            architecture: Some(r.architecture),
            is_local: Some(r.is_local),
            digest: digest.clone(),
            labels: Some(
                labels
                    .into_iter()
                    .map(|(key, value)| {
                        Some(KvPair {
                            key: Some(key),
                            value: Some(value),
                        })
                    })
                    .collect(),
            ),
            aliases: Some(r.aliases.into_iter().map(Some).collect()),
            size_bytes: Some(BigInt(r.size_bytes)),
            resource_limits: Some(
                resources
                    .into_iter()
                    .map(|(key, l)| {
                        Some(ResourceLimit {
                            key: Some(key),
                            min: Some(amount(Some(&l.min), "0")),
                            max: Some(amount(l.max.as_deref(), "Infinity")),
                        })
                    })
                    .collect(),
            ),
            supported_accelerators: Some(accelerators),
            installed: Some(false),
            installed_agents: Some(Vec::new()),
            hash: digest,
        }
    }
}

/// Limits the query to the registries the caller's domain allows (see the
/// module docs).
fn scope(ctx: &Context, conds: &mut Conditions) {
    if ctx.actor.is_superadmin() {
        return;
    }
    conds.bind(
        "i.registry IN (SELECT jsonb_array_elements_text(d.allowed_docker_registries) \
         FROM domains d WHERE d.name = {})",
        Param::Text(ctx.actor.domain_name.clone()),
    );
}

async fn load(ctx: &Context, conds: Conditions) -> FieldResult<Vec<Image>> {
    let mut conn = ctx.connection().await?;
    let rows: Vec<ImageRow> = conds
        .load(
            &mut conn,
            IMAGE_COLUMNS,
            "images i",
            " ORDER BY i.name, i.architecture",
        )
        .await?;
    Ok(rows.into_iter().map(Image::from).collect())
}

/// `images(is_installed, is_operation)`: the images the caller may see.
pub(super) async fn images(
    ctx: &Context,
    is_installed: Option<bool>,
    is_operation: GqlNullable<bool>,
) -> FieldResult<Vec<Option<Image>>> {
    let mut conds = Conditions::default();
    scope(ctx, &mut conds);
    let operation = match is_operation {
        GqlNullable::ImplicitNull => Some(false),
        GqlNullable::ExplicitNull => None,
        GqlNullable::Some(b) => Some(b),
    };
    if let Some(operation) = operation {
        conds.bind(
            "(coalesce(i.labels->>'ai.backend.features', '') LIKE '%operation%') = {}",
            Param::Bool(operation),
        );
    }
    if is_installed == Some(true) {
        // Nothing is known to be installed (see the module docs).
        conds.raw("false");
    }
    Ok(load(ctx, conds).await?.into_iter().map(Some).collect())
}

/// `image(reference, architecture)`: the image a reference names, or null.
pub(super) async fn image(
    ctx: &Context,
    reference: String,
    architecture: Option<String>,
) -> FieldResult<Option<Image>> {
    let reference = reference.trim().to_owned();
    let architecture = architecture
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| DEFAULT_ARCHITECTURE.to_owned());
    // An alias: the image it names, or the same name for this architecture.
    let mut by_alias = Conditions::default();
    scope(ctx, &mut by_alias);
    by_alias.bind("i.architecture = {}", Param::Text(architecture.clone()));
    by_alias.bind(
        "i.name IN (SELECT j.name FROM image_aliases a JOIN images j ON j.id = a.image_id \
         WHERE lower(a.alias) = lower({}))",
        Param::Text(reference.clone()),
    );
    if let Some(found) = load(ctx, by_alias).await?.into_iter().next() {
        return Ok(Some(found));
    }
    // A canonical name.
    let mut by_name = Conditions::default();
    scope(ctx, &mut by_name);
    by_name.bind("i.architecture = {}", Param::Text(architecture));
    by_name.bind("i.name = {}", Param::Text(reference));
    Ok(load(ctx, by_name).await?.into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_print_as_the_reference_prints_them() {
        assert_eq!(amount(Some("268435456"), "0"), "268435456");
        assert_eq!(amount(Some("1.0"), "0"), "1");
        assert_eq!(amount(Some(""), "0"), "0");
        assert_eq!(amount(None, "Infinity"), "Infinity");
        assert_eq!(amount(Some("inf"), "Infinity"), "Infinity");
    }

    #[test]
    fn rows_become_images() {
        let row = ImageRow {
            id: Uuid::nil(),
            name: "cr.backend.ai/stable/python:3.9-ubuntu20.04".into(),
            architecture: "x86_64".into(),
            registry: "cr.backend.ai".into(),
            image: "stable/python".into(),
            tag: "3.9-ubuntu20.04".into(),
            config_digest: Some("sha256:abc ".into()),
            size_bytes: 5,
            is_local: false,
            labels: serde_json::json!({"ai.backend.accelerators": "cuda, rocm", "b": "2"}),
            resources: serde_json::json!({"cpu": {"min": "1"}, "mem": {"min": "268435456", "max": null}}),
            aliases: vec!["python".into()],
        };
        let image = Image::from(row);
        assert_eq!(image.name.as_deref(), Some("stable/python"));
        assert_eq!(image.digest.as_deref(), Some("sha256:abc"));
        assert_eq!(image.hash, image.digest);
        let limits: Vec<(String, String, String)> = image
            .resource_limits
            .unwrap()
            .into_iter()
            .flatten()
            .map(|l| (l.key.unwrap(), l.min.unwrap(), l.max.unwrap()))
            .collect();
        assert_eq!(
            limits,
            [
                ("cpu".into(), "1".into(), "Infinity".into()),
                ("mem".into(), "268435456".into(), "Infinity".into())
            ]
        );
        assert_eq!(
            image.supported_accelerators.unwrap(),
            [Some("cuda".to_owned()), Some("rocm".to_owned())]
        );
        assert_eq!(image.labels.unwrap().len(), 2);
        assert_eq!(image.installed, Some(false));
    }
}
