//! Resource presets: named bundles of slots (and shared memory) that clients
//! offer when creating a session. The events of a preset's stream
//! (`resource-preset:<name>`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The stream type of resource presets.
pub const STREAM_TYPE: &str = "resource_preset";

/// The stream id of a resource preset.
pub fn stream_id(name: &str) -> String {
    format!("resource-preset:{name}")
}

/// The fields of a resource preset (reference: `resource_presets`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcePresetFields {
    /// Slot name → amount, decimal strings (bytes for `mem`); `cpu` and
    /// `mem` are always present.
    pub resource_slots: BTreeMap<String, String>,
    /// Bytes of shared memory (`/dev/shm`); `None`: the cluster's default.
    pub shared_memory: Option<i64>,
    /// The scaling group the preset is meant for; `None`: any.
    pub scaling_group_name: Option<String>,
}

/// Events of a resource preset's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourcePresetEvent {
    /// The preset was created.
    ResourcePresetCreated {
        /// Its name.
        name: String,
        /// Its fields.
        #[serde(flatten)]
        fields: ResourcePresetFields,
    },
    /// Its fields were replaced.
    ResourcePresetModified {
        /// The new fields.
        #[serde(flatten)]
        fields: ResourcePresetFields,
    },
    /// Deleted.
    ResourcePresetDeleted,
}
