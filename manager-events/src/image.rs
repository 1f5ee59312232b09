//! Images: what kernels run. The events of an image's stream
//! (`image:<canonical>@<architecture>`, one stream per name and
//! architecture, as the reference keeps one row per pair).
//!
//! Aliases (`python` → `cr.backend.ai/stable/python:3.9-ubuntu20.04`) are
//! reservations (`unique:image-alias:<alias>`) held by the image's stream,
//! so one alias names one image at a time, on every manager at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The stream type of images.
pub const STREAM_TYPE: &str = "image";

/// The reservation scope of image aliases.
pub const ALIAS_SCOPE: &str = "image-alias";

/// The architecture an image reference without one means.
pub const DEFAULT_ARCHITECTURE: &str = "x86_64";

/// The stream id of an image. Canonical names use `/`, which stream ids do
/// not allow; it is written as `:` (which a canonical name's repository part
/// never holds, so the mapping cannot collide).
pub fn stream_id(canonical: &str, architecture: &str) -> String {
    let mut id = String::with_capacity(canonical.len() + architecture.len() + 7);
    id.push_str("image:");
    for c in canonical.chars() {
        id.push(if c == '/' { ':' } else { c });
    }
    id.push('@');
    id.push_str(architecture);
    id
}

/// The bounds an image puts on one slot of a kernel running it (decimal
/// strings, `mem` in bytes). `max: None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SlotLimits {
    /// The least a kernel may ask for.
    #[serde(default)]
    pub min: String,
    /// The most a kernel may ask for.
    #[serde(default)]
    pub max: Option<String>,
}

/// The fields of an image (reference: `images`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageFields {
    /// The registry's name (`cr.backend.ai`).
    pub registry: String,
    /// The repository within it (`stable/python`).
    pub image: String,
    /// The tag (`3.9-ubuntu20.04`).
    pub tag: String,
    /// Content digest of the image config, when known.
    #[serde(default)]
    pub config_digest: Option<String>,
    /// Size in bytes.
    #[serde(default)]
    pub size_bytes: u64,
    /// `compute`, `system` or `service`.
    #[serde(default)]
    pub kind: String,
    /// Docker labels (`ai.backend.service-ports`, `ai.backend.runtime-path`…).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Slot bounds per slot name.
    #[serde(default)]
    pub resources: BTreeMap<String, SlotLimits>,
}

/// Events of an image's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageEvent {
    /// The image became known (a registry rescan or a fixture).
    ImageRegistered {
        /// Canonical name, `registry/repo:tag`.
        canonical: String,
        /// CPU architecture.
        architecture: String,
        /// Its fields.
        #[serde(flatten)]
        fields: ImageFields,
    },
    /// Its fields changed (a rescan found a new digest, labels, bounds).
    ImageUpdated {
        /// The new fields.
        #[serde(flatten)]
        fields: ImageFields,
    },
    /// An alias now names it.
    ImageAliased {
        /// The alias.
        alias: String,
    },
    /// An alias no longer names it.
    ImageUnaliased {
        /// The alias.
        alias: String,
    },
    /// Forgotten (sessions can no longer start from it).
    ImageForgotten,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_stream_ids_are_valid_and_distinct_per_architecture() {
        let a = stream_id("cr.backend.ai/stable/python:3.9-ubuntu20.04", "x86_64");
        assert_eq!(
            a,
            "image:cr.backend.ai:stable:python:3.9-ubuntu20.04@x86_64"
        );
        assert!(crate::append::validate_stream_id(&a).is_ok());
        assert_ne!(
            a,
            stream_id("cr.backend.ai/stable/python:3.9-ubuntu20.04", "aarch64")
        );
    }
}
