//! The image aggregate: an image's fields, its slot bounds, its aliases.

use std::collections::{BTreeMap, BTreeSet};

use manager_events::image::{self, ImageEvent, ImageFields};
use manager_events::slots::{SlotAmount, valid_slot_name};
use manager_events::{Problem, ProblemKind};

use crate::aggregate::Aggregate;

/// Longest alias accepted.
const MAX_ALIAS_LEN: usize = 255;

/// Longest tag accepted (Docker's limit).
const MAX_TAG_LEN: usize = 128;

/// Commands on an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageCommand {
    /// Makes the image known. Idempotent: the same canonical name,
    /// architecture and fields again append nothing; other fields are
    /// refused (use [`ImageCommand::Update`]). A forgotten image is
    /// registered again.
    Register {
        /// Canonical name, `registry/repo:tag`; must agree with the fields'
        /// `registry`, `image` and `tag`.
        canonical: String,
        /// CPU architecture (`x86_64`, `aarch64`).
        architecture: String,
        /// Its fields.
        fields: ImageFields,
    },
    /// Replaces its fields (registry, repository and tag stay: they are the
    /// canonical name). The same fields again append nothing.
    Update(ImageFields),
    /// Lets an alias name it (the reservation is the workflow's business,
    /// see [`super::AliasImage`]).
    Alias(String),
    /// Stops an alias from naming it; nothing to do if it does not.
    Unalias(String),
    /// Forgets it: sessions can no longer start from it. Refused while
    /// aliases name it (see [`super::ForgetImage`], which removes them).
    Forget,
}

/// Why an image command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// A field breaks a rule (400 `invalid-api-params`).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule, with the offending value.
        reason: String,
    },
    /// Registered already with other fields (400): update it instead.
    #[error(
        "integrity error: the image {0} is already registered with other fields; update it instead"
    )]
    AlreadyRegistered(String),
    /// No such image, or it was forgotten (404 `object-not-found`).
    #[error("no such image")]
    NotFound,
    /// Aliases still name it (400): remove them first.
    #[error("the image is still aliased as {0}; remove the aliases first")]
    StillAliased(String),
}

impl From<ImageError> for Problem {
    fn from(err: ImageError) -> Problem {
        let kind = match err {
            ImageError::Invalid { .. } => ProblemKind::InvalidApiParams,
            ImageError::NotFound => ProblemKind::ObjectNotFound("environment image"),
            _ => ProblemKind::GenericBadRequest,
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// An image's state: what session creation needs to know of it.
///
/// `min_slots`/`max_slots` hold the bounds of every slot the image names
/// (`mem` in bytes); a slot it does not name is bounded by 0 and unlimited
/// ([`Image::min_of`], [`Image::max_of`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Image {
    /// Canonical name, `registry/repo:tag`; empty until registered.
    pub canonical: String,
    /// CPU architecture.
    pub architecture: String,
    /// Its fields as last recorded (registry, repository, tag, digest, size,
    /// kind, labels, slot bounds as recorded).
    pub fields: ImageFields,
    /// The least of each slot a kernel of it may ask for.
    #[serde(with = "amounts")]
    pub min_slots: BTreeMap<String, SlotAmount>,
    /// The most of each slot a kernel of it may ask for
    /// ([`SlotAmount::Infinity`] when unbounded).
    #[serde(with = "amounts")]
    pub max_slots: BTreeMap<String, SlotAmount>,
    /// The aliases naming it, as spelled when added.
    pub aliases: BTreeSet<String>,
    /// Forgotten (and not registered again since).
    pub forgotten: bool,
}

impl Image {
    /// Whether it was ever registered.
    pub fn registered(&self) -> bool {
        !self.canonical.is_empty()
    }

    /// Whether it is registered and not forgotten: sessions may start from it.
    pub fn live(&self) -> bool {
        self.registered() && !self.forgotten
    }

    /// The registry's name (`cr.backend.ai`).
    pub fn registry(&self) -> &str {
        &self.fields.registry
    }

    /// The repository within the registry (`stable/python`).
    pub fn repository(&self) -> &str {
        &self.fields.image
    }

    /// The tag (`3.9-ubuntu20.04`).
    pub fn tag(&self) -> &str {
        &self.fields.tag
    }

    /// Its Docker labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.fields.labels
    }

    /// The least of `slot` a kernel may ask for (0 when the image does not
    /// name the slot).
    pub fn min_of(&self, slot: &str) -> SlotAmount {
        self.min_slots
            .get(slot)
            .copied()
            .unwrap_or(SlotAmount::ZERO)
    }

    /// The most of `slot` a kernel may ask for (unlimited when the image
    /// does not bound it).
    pub fn max_of(&self, slot: &str) -> SlotAmount {
        self.max_slots
            .get(slot)
            .copied()
            .unwrap_or(SlotAmount::Infinity)
    }

    /// The alias as this image spells it, if it names this image (compared
    /// as reservations compare: trimmed, without regard to case).
    pub fn alias(&self, alias: &str) -> Option<&String> {
        let wanted = alias.trim().to_lowercase();
        self.aliases.iter().find(|a| a.to_lowercase() == wanted)
    }

    fn set_fields(&mut self, fields: &ImageFields) {
        self.fields = fields.clone();
        self.min_slots.clear();
        self.max_slots.clear();
        for (slot, limits) in &fields.resources {
            // Validated when decided; a value that does not read (an
            // event from before a rule existed) takes the default bound.
            let min = min_amount(&limits.min).unwrap_or(SlotAmount::ZERO);
            let max = limits
                .max
                .as_deref()
                .map_or(Ok(SlotAmount::Infinity), SlotAmount::parse)
                .unwrap_or(SlotAmount::Infinity);
            self.min_slots.insert(slot.clone(), min);
            self.max_slots.insert(slot.clone(), max);
        }
    }
}

/// Slot amount maps in snapshots: decimal strings, as amounts are written.
mod amounts {
    use std::collections::BTreeMap;

    use manager_events::slots::SlotAmount;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, SlotAmount>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, v)| (k.as_str(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, SlotAmount>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                SlotAmount::parse(&v)
                    .map(|a| (k, a))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// An image's minimum: empty means 0.
fn min_amount(text: &str) -> Result<SlotAmount, manager_events::slots::SlotAmountError> {
    if text.trim().is_empty() {
        Ok(SlotAmount::ZERO)
    } else {
        SlotAmount::parse(text)
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Whether `arch` can name an architecture: 1-32 lower-case letters, digits
/// and `_`, starting with a letter (`x86_64`, `aarch64`).
pub fn valid_architecture(arch: &str) -> bool {
    (1..=32).contains(&arch.len())
        && arch.as_bytes()[0].is_ascii_lowercase()
        && arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_registry(registry: &str) -> bool {
    let (host, port) = match registry.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    // Docker's rule: the first component names a registry only if it has a
    // dot or a port, or is `localhost`.
    let looks_like_registry = registry.contains('.') || port.is_some() || host == "localhost";
    host_ok && port_ok && looks_like_registry
}

fn valid_repository(repo: &str) -> bool {
    !repo.is_empty()
        && repo.split('/').all(|c| {
            !c.is_empty()
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        })
}

fn valid_tag(tag: &str) -> bool {
    (1..=MAX_TAG_LEN).contains(&tag.len())
        && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.as_bytes()[0] == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Splits a canonical name `registry/repo:tag` into its parts, or says
/// which rule it breaks. The registry must look like one (a host with a dot
/// or a port, or `localhost`), the repository is lower-case path components,
/// the tag Docker's (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`); digests (`@sha256:…`)
/// are not names.
pub fn parse_canonical(canonical: &str) -> Result<(&str, &str, &str), &'static str> {
    let (registry, rest) = canonical
        .split_once('/')
        .ok_or("use registry/repository:tag (no registry given)")?;
    if !valid_registry(registry) {
        return Err(
            "the registry must be a host name with a dot or a port, or localhost (e.g. cr.backend.ai)",
        );
    }
    let (repo, tag) = rest
        .rsplit_once(':')
        .ok_or("use registry/repository:tag (no tag given)")?;
    if !valid_repository(repo) {
        return Err(
            "the repository is lower-case letters, digits, '.', '_' and '-' in '/'-separated parts",
        );
    }
    if !valid_tag(tag) {
        return Err(
            "the tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
        );
    }
    Ok((registry, repo, tag))
}

fn check_identity(canonical: &str, architecture: &str) -> Result<(), ImageError> {
    if !valid_architecture(architecture) {
        return Err(invalid(
            "architecture",
            format!(
                "{architecture:?} is not an architecture (1-32 lower-case letters, digits and '_', e.g. x86_64)"
            ),
        ));
    }
    parse_canonical(canonical)
        .map_err(|rule| invalid("canonical name", format!("{canonical:?}: {rule}")))?;
    let id = image::stream_id(canonical, architecture);
    if manager_events::append::validate_stream_id(&id).is_err() {
        return Err(invalid(
            "canonical name",
            format!("{canonical:?} is too long"),
        ));
    }
    Ok(())
}

/// Checks fields against the canonical name they belong to and the slot rules.
fn check_fields(canonical: &str, f: &ImageFields) -> Result<(), ImageError> {
    let (registry, repo, tag) = parse_canonical(canonical)
        .map_err(|rule| invalid("canonical name", format!("{canonical:?}: {rule}")))?;
    if (f.registry.as_str(), f.image.as_str(), f.tag.as_str()) != (registry, repo, tag) {
        return Err(invalid(
            "canonical name",
            format!(
                "{canonical:?} is not registry {:?}, image {:?} and tag {:?} as {{registry}}/{{image}}:{{tag}}",
                f.registry, f.image, f.tag
            ),
        ));
    }
    if !matches!(f.kind.as_str(), "" | "compute" | "system" | "service") {
        return Err(invalid(
            "kind",
            format!("{:?}: use compute, system or service", f.kind),
        ));
    }
    if f.labels.keys().any(|k| k.trim().is_empty()) {
        return Err(invalid("labels", "a label has an empty key"));
    }
    for (slot, limits) in &f.resources {
        if !valid_slot_name(slot) {
            return Err(invalid(
                "slot name",
                format!(
                    "{slot:?} is not a slot name (lower-case letters, digits, '_' and '.', e.g. cpu, mem, cuda.device)"
                ),
            ));
        }
        let amount_err = |which: &str, text: &str, why: String| {
            invalid("slot amount", format!("{which} of {slot} {text:?}: {why}"))
        };
        let min = min_amount(&limits.min)
            .map_err(|e| amount_err("minimum", &limits.min, e.to_string()))?;
        if min == SlotAmount::Infinity {
            return Err(amount_err(
                "minimum",
                &limits.min,
                "cannot be unlimited".into(),
            ));
        }
        if min.is_negative() {
            return Err(amount_err("minimum", &limits.min, "is negative".into()));
        }
        let bytes = slot == "mem";
        if bytes && !min.is_whole() {
            return Err(amount_err(
                "minimum",
                &limits.min,
                "mem is a whole number of bytes".into(),
            ));
        }
        if let Some(text) = &limits.max {
            let max =
                SlotAmount::parse(text).map_err(|e| amount_err("maximum", text, e.to_string()))?;
            if max.is_negative() {
                return Err(amount_err("maximum", text, "is negative".into()));
            }
            if bytes && max != SlotAmount::Infinity && !max.is_whole() {
                return Err(amount_err(
                    "maximum",
                    text,
                    "mem is a whole number of bytes".into(),
                ));
            }
            if max < min {
                return Err(amount_err(
                    "maximum",
                    text,
                    format!("is below the minimum {min}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_alias(alias: &str) -> Result<(), ImageError> {
    let ok =
        (1..=MAX_ALIAS_LEN).contains(&alias.len()) && alias.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "alias",
            format!("{alias:?}: use 1-{MAX_ALIAS_LEN} visible ASCII characters, no spaces"),
        ))
    }
}

impl Aggregate for Image {
    const STREAM_TYPE: &'static str = image::STREAM_TYPE;
    type Command = ImageCommand;
    type Event = ImageEvent;
    type Error = ImageError;

    fn apply(&mut self, event: &ImageEvent) {
        match event {
            ImageEvent::ImageRegistered {
                canonical,
                architecture,
                fields,
            } => {
                self.canonical = canonical.clone();
                self.architecture = architecture.clone();
                self.forgotten = false;
                self.set_fields(fields);
            }
            ImageEvent::ImageUpdated { fields } => self.set_fields(fields),
            ImageEvent::ImageAliased { alias } => {
                self.aliases.insert(alias.clone());
            }
            ImageEvent::ImageUnaliased { alias } => {
                self.aliases.remove(alias);
            }
            ImageEvent::ImageForgotten => self.forgotten = true,
        }
    }

    fn decide(&self, command: &ImageCommand) -> Result<Vec<ImageEvent>, ImageError> {
        match command {
            ImageCommand::Register {
                canonical,
                architecture,
                fields,
            } => {
                check_identity(canonical, architecture)?;
                check_fields(canonical, fields)?;
                if self.registered()
                    && (self.canonical != *canonical || self.architecture != *architecture)
                {
                    // Two names mapped to one stream id (a registry with a
                    // port against a repository named like it): refuse
                    // rather than mix them up.
                    return Err(invalid(
                        "canonical name",
                        format!(
                            "{canonical:?} shares its stream with the image {:?}",
                            self.canonical
                        ),
                    ));
                }
                if self.live() {
                    return if self.fields == *fields {
                        Ok(vec![])
                    } else {
                        Err(ImageError::AlreadyRegistered(canonical.clone()))
                    };
                }
                Ok(vec![ImageEvent::ImageRegistered {
                    canonical: canonical.clone(),
                    architecture: architecture.clone(),
                    fields: fields.clone(),
                }])
            }
            ImageCommand::Update(fields) => {
                if !self.live() {
                    return Err(ImageError::NotFound);
                }
                check_fields(&self.canonical, fields)?;
                Ok(if self.fields == *fields {
                    vec![]
                } else {
                    vec![ImageEvent::ImageUpdated {
                        fields: fields.clone(),
                    }]
                })
            }
            ImageCommand::Alias(alias) => {
                check_alias(alias)?;
                if !self.live() {
                    return Err(ImageError::NotFound);
                }
                Ok(if self.alias(alias).is_some() {
                    vec![]
                } else {
                    vec![ImageEvent::ImageAliased {
                        alias: alias.clone(),
                    }]
                })
            }
            ImageCommand::Unalias(alias) => {
                if !self.registered() {
                    return Err(ImageError::NotFound);
                }
                Ok(match self.alias(alias) {
                    Some(spelled) => vec![ImageEvent::ImageUnaliased {
                        alias: spelled.clone(),
                    }],
                    None => vec![],
                })
            }
            ImageCommand::Forget => {
                if !self.registered() {
                    return Err(ImageError::NotFound);
                }
                if self.forgotten {
                    return Ok(vec![]);
                }
                if !self.aliases.is_empty() {
                    let names: Vec<&str> = self.aliases.iter().map(String::as_str).collect();
                    return Err(ImageError::StillAliased(names.join(", ")));
                }
                Ok(vec![ImageEvent::ImageForgotten])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;
    use manager_events::image::SlotLimits;

    const PYTHON: &str = "cr.backend.ai/stable/python:3.9-ubuntu20.04";

    fn limits(min: &str, max: Option<&str>) -> SlotLimits {
        SlotLimits {
            min: min.into(),
            max: max.map(Into::into),
        }
    }

    fn fields() -> ImageFields {
        ImageFields {
            registry: "cr.backend.ai".into(),
            image: "stable/python".into(),
            tag: "3.9-ubuntu20.04".into(),
            config_digest: Some("sha256:abc".into()),
            size_bytes: 1024,
            kind: "compute".into(),
            labels: [("ai.backend.runtime-type".to_owned(), "python".to_owned())].into(),
            resources: [
                ("cpu".to_owned(), limits("1", None)),
                ("mem".to_owned(), limits("268435456", Some("17179869184"))),
            ]
            .into(),
        }
    }

    fn register() -> ImageCommand {
        ImageCommand::Register {
            canonical: PYTHON.into(),
            architecture: "x86_64".into(),
            fields: fields(),
        }
    }

    fn registered() -> ImageEvent {
        ImageEvent::ImageRegistered {
            canonical: PYTHON.into(),
            architecture: "x86_64".into(),
            fields: fields(),
        }
    }

    fn aliased(alias: &str) -> ImageEvent {
        ImageEvent::ImageAliased {
            alias: alias.into(),
        }
    }

    fn state(events: impl IntoIterator<Item = ImageEvent>) -> Image {
        let mut image = Image::default();
        for e in events {
            image.apply(&e);
        }
        image
    }

    fn error_field(cmd: ImageCommand) -> &'static str {
        match Image::default().decide(&cmd) {
            Err(ImageError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    fn register_with(canonical: &str, architecture: &str, f: ImageFields) -> ImageCommand {
        ImageCommand::Register {
            canonical: canonical.into(),
            architecture: architecture.into(),
            fields: f,
        }
    }

    #[test]
    fn registering_is_idempotent_when_identical() {
        Scenario::<Image>::given([])
            .when(register())
            .then([registered()]);
        Scenario::<Image>::given([registered()])
            .when(register())
            .then([]);
        let other = ImageFields {
            size_bytes: 2048,
            ..fields()
        };
        Scenario::<Image>::given([registered()])
            .when(register_with(PYTHON, "x86_64", other))
            .then_error(ImageError::AlreadyRegistered(PYTHON.into()));
    }

    #[test]
    fn the_state_exposes_names_labels_and_slot_bounds() {
        let mut image = Image::default();
        image.apply(&registered());
        assert!(image.live());
        assert_eq!(image.canonical, PYTHON);
        assert_eq!(image.architecture, "x86_64");
        assert_eq!(
            (image.registry(), image.repository(), image.tag()),
            ("cr.backend.ai", "stable/python", "3.9-ubuntu20.04")
        );
        assert_eq!(image.labels()["ai.backend.runtime-type"], "python");
        assert_eq!(image.min_of("cpu"), SlotAmount::from_int(1));
        assert_eq!(image.max_of("cpu"), SlotAmount::Infinity);
        assert_eq!(image.min_of("mem"), SlotAmount::from_int(268_435_456));
        assert_eq!(image.max_of("mem"), SlotAmount::from_int(17_179_869_184));
        assert_eq!(image.min_of("cuda.device"), SlotAmount::ZERO);
        assert_eq!(image.max_of("cuda.device"), SlotAmount::Infinity);
        // Snapshots keep the amounts.
        let json = serde_json::to_value(&image).unwrap();
        assert_eq!(json["min_slots"]["mem"], "268435456");
        assert_eq!(json["max_slots"]["cpu"], "Infinity");
        assert_eq!(serde_json::from_value::<Image>(json).unwrap(), image);
    }

    #[test]
    fn invalid_names_architectures_and_slots_are_refused() {
        for bad in [
            "python:3.9",
            "stable/python:3.9",
            "cr.backend.ai/stable/python",
            "cr.backend.ai/Stable/python:3.9",
            "cr.backend.ai/stable//python:3.9",
            "cr.backend.ai/stable/python:-x",
            "cr.backend.ai/stable/python@sha256:abc",
            "cr backend.ai/stable/python:3.9",
        ] {
            assert_eq!(
                error_field(register_with(bad, "x86_64", fields())),
                "canonical name",
                "{bad}"
            );
        }
        let long = format!("cr.backend.ai/{}:1", "a".repeat(200));
        assert_eq!(
            error_field(register_with(&long, "x86_64", fields())),
            "canonical name"
        );
        // The name must be the fields' registry/image:tag.
        assert_eq!(
            error_field(register_with(
                "cr.backend.ai/stable/python:3.10",
                "x86_64",
                fields()
            )),
            "canonical name"
        );
        for bad in ["", "X86_64", "x86 64", "64bit"] {
            assert_eq!(
                error_field(register_with(PYTHON, bad, fields())),
                "architecture",
                "{bad:?}"
            );
        }
        let with_slot = |slot: &str, l: SlotLimits| {
            let mut f = fields();
            f.resources.insert(slot.into(), l);
            register_with(PYTHON, "x86_64", f)
        };
        assert_eq!(
            error_field(with_slot("CUDA-device", limits("1", None))),
            "slot name"
        );
        for (min, max) in [
            ("abc", None),
            ("-1", None),
            ("Infinity", None),
            ("1", Some("0.5")),
            ("1", Some("lots")),
            ("0.0000001", None),
        ] {
            assert_eq!(
                error_field(with_slot("cpu", limits(min, max))),
                "slot amount",
                "{min} {max:?}"
            );
        }
        for (min, max) in [("256m", None), ("0.5", None), ("1", Some("1.5"))] {
            assert_eq!(
                error_field(with_slot("mem", limits(min, max))),
                "slot amount",
                "{min} {max:?}"
            );
        }
        // An empty minimum is 0; an unlimited maximum is fine.
        let ok = with_slot("cuda.shares", limits("", Some("Infinity")));
        assert!(Image::default().decide(&ok).is_ok());
        let mut f = fields();
        f.kind = "gadget".into();
        assert_eq!(error_field(register_with(PYTHON, "x86_64", f)), "kind");
        // A local registry with a port is a registry.
        let mut f = fields();
        f.registry = "localhost:5000".into();
        assert!(
            Image::default()
                .decide(&register_with(
                    "localhost:5000/stable/python:3.9-ubuntu20.04",
                    "aarch64",
                    f
                ))
                .is_ok()
        );
    }

    #[test]
    fn updates_keep_the_name_and_skip_what_is_the_same() {
        let newer = ImageFields {
            config_digest: Some("sha256:def".into()),
            ..fields()
        };
        Scenario::<Image>::given([registered()])
            .when(ImageCommand::Update(newer.clone()))
            .then([ImageEvent::ImageUpdated {
                fields: newer.clone(),
            }]);
        Scenario::<Image>::given([registered()])
            .when(ImageCommand::Update(fields()))
            .then([]);
        let moved = ImageFields {
            tag: "3.10".into(),
            ..fields()
        };
        assert!(matches!(
            state([registered()]).decide(&ImageCommand::Update(moved)),
            Err(ImageError::Invalid {
                field: "canonical name",
                ..
            })
        ));
        Scenario::<Image>::given([])
            .when(ImageCommand::Update(fields()))
            .then_error(ImageError::NotFound);
        let mut image = Image::default();
        image.apply(&registered());
        image.apply(&ImageEvent::ImageUpdated {
            fields: ImageFields {
                resources: [("mem".to_owned(), limits("536870912", None))].into(),
                ..fields()
            },
        });
        assert_eq!(image.min_of("mem"), SlotAmount::from_int(536_870_912));
        assert_eq!(image.min_of("cpu"), SlotAmount::ZERO, "bounds are replaced");
    }

    #[test]
    fn aliases_are_added_once_and_removed_as_spelled() {
        Scenario::<Image>::given([registered()])
            .when(ImageCommand::Alias("python".into()))
            .then([aliased("python")]);
        Scenario::<Image>::given([registered(), aliased("python")])
            .when(ImageCommand::Alias("Python".into()))
            .then([]);
        Scenario::<Image>::given([registered(), aliased("python")])
            .when(ImageCommand::Unalias("PYTHON".into()))
            .then([ImageEvent::ImageUnaliased {
                alias: "python".into(),
            }]);
        Scenario::<Image>::given([registered()])
            .when(ImageCommand::Unalias("python".into()))
            .then([]);
        Scenario::<Image>::given([])
            .when(ImageCommand::Alias("python".into()))
            .then_error(ImageError::NotFound);
        assert!(matches!(
            Image::default().decide(&ImageCommand::Alias("py thon".into())),
            Err(ImageError::Invalid { field: "alias", .. })
        ));
        assert!(matches!(
            Image::default().decide(&ImageCommand::Alias(String::new())),
            Err(ImageError::Invalid { field: "alias", .. })
        ));
    }

    #[test]
    fn forgetting_needs_no_aliases_and_registering_brings_it_back() {
        Scenario::<Image>::given([registered(), aliased("python")])
            .when(ImageCommand::Forget)
            .then_error(ImageError::StillAliased("python".into()));
        Scenario::<Image>::given([registered()])
            .when(ImageCommand::Forget)
            .then([ImageEvent::ImageForgotten]);
        Scenario::<Image>::given([registered(), ImageEvent::ImageForgotten])
            .when(ImageCommand::Forget)
            .then([]);
        Scenario::<Image>::given([])
            .when(ImageCommand::Forget)
            .then_error(ImageError::NotFound);
        // Forgotten: no aliases, no updates; registering again revives it.
        Scenario::<Image>::given([registered(), ImageEvent::ImageForgotten])
            .when(ImageCommand::Alias("python".into()))
            .then_error(ImageError::NotFound);
        Scenario::<Image>::given([registered(), ImageEvent::ImageForgotten])
            .when(register())
            .then([registered()]);
        let mut image = Image::default();
        for e in [registered(), ImageEvent::ImageForgotten, registered()] {
            image.apply(&e);
        }
        assert!(image.live());
    }

    #[test]
    fn a_stream_holds_one_name() {
        // `host:port/repo` and `host/port/repo` share a stream id.
        let (a, b) = (
            "cr.backend.ai/5000/python:3.9",
            "cr.backend.ai:5000/python:3.9",
        );
        assert_eq!(image::stream_id(a, "x86_64"), image::stream_id(b, "x86_64"));
        let fields_of = |registry: &str, repo: &str| ImageFields {
            registry: registry.into(),
            image: repo.into(),
            tag: "3.9".into(),
            ..ImageFields::default()
        };
        let first = ImageEvent::ImageRegistered {
            canonical: a.into(),
            architecture: "x86_64".into(),
            fields: fields_of("cr.backend.ai", "5000/python"),
        };
        assert!(matches!(
            state([first]).decide(&register_with(
                b,
                "x86_64",
                fields_of("cr.backend.ai:5000", "python")
            )),
            Err(ImageError::Invalid {
                field: "canonical name",
                ..
            })
        ));
    }

    #[test]
    fn refusals_map_to_problems() {
        let p: Problem = ImageError::NotFound.into();
        assert_eq!(p.kind, ProblemKind::ObjectNotFound("environment image"));
        let p: Problem = invalid("alias", "x").into();
        assert_eq!(p.kind, ProblemKind::InvalidApiParams);
        let p: Problem = ImageError::AlreadyRegistered(PYTHON.into()).into();
        assert_eq!(p.kind, ProblemKind::GenericBadRequest);
    }
}
