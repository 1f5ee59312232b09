//! The object types clients select from (API spec §5.4), field names and
//! types as the reference's.

use juniper::{GraphQLObject, ID};
use uuid::Uuid;

use super::scalars::{BigInt, DateTime, JsonString};

/// A project a user belongs to.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct UserGroup {
    /// The project's id.
    pub id: Option<Uuid>,
    /// Its name.
    pub name: Option<String>,
}

/// A user.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct User {
    /// Same as `uuid`.
    pub id: Option<ID>,
    /// The user's id.
    pub uuid: Option<Uuid>,
    /// Login name.
    pub username: Option<String>,
    /// E-mail.
    pub email: Option<String>,
    /// Must change the password at the next login.
    pub need_password_change: Option<bool>,
    /// Display name.
    pub full_name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// `status == "active"`.
    pub is_active: Option<bool>,
    /// `active`, `inactive`, `deleted` or `before-verification`.
    pub status: Option<String>,
    /// Why the status is what it is.
    pub status_info: Option<String>,
    /// Creation time.
    pub created_at: Option<DateTime>,
    /// Last change.
    pub modified_at: Option<DateTime>,
    /// Its domain.
    pub domain_name: Option<String>,
    /// `superadmin`, `admin`, `user` or `monitor`.
    pub role: Option<String>,
    /// User resource policy.
    pub resource_policy: Option<String>,
    /// Addresses or networks it may connect from (null: anywhere).
    pub allowed_client_ip: Option<Vec<Option<String>>>,
    /// Two-factor authentication enabled.
    pub totp_activated: Option<bool>,
    /// When two-factor authentication was enabled.
    pub totp_activated_at: Option<DateTime>,
    /// Passwordless sudo in its containers.
    pub sudo_session_enabled: Option<bool>,
    /// Its main keypair.
    pub main_access_key: Option<String>,
    /// Projects it belongs to.
    pub groups: Option<Vec<Option<UserGroup>>>,
}

/// A page of users.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct UserList {
    /// The page.
    pub items: Vec<Option<User>>,
    /// How many match, over all pages.
    pub total_count: i32,
}

/// The owner of a keypair, as `KeyPair.user_info` shows it.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct UserInfo {
    /// E-mail.
    pub email: Option<String>,
    /// Display name.
    pub full_name: Option<String>,
}

/// A keypair.
#[derive(Debug, Clone, Default, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct KeyPair {
    /// Same as `access_key`.
    pub id: Option<ID>,
    /// The owner's e-mail (the reference's naming).
    pub user_id: Option<String>,
    /// The owner's display name.
    pub full_name: Option<String>,
    /// Access key.
    pub access_key: Option<String>,
    /// Secret key (opened only when selected).
    pub secret_key: Option<String>,
    /// Whether it may authenticate.
    pub is_active: Option<bool>,
    /// Admin flag.
    pub is_admin: Option<bool>,
    /// Keypair resource policy.
    pub resource_policy: Option<String>,
    /// Creation time.
    pub created_at: Option<DateTime>,
    /// Last request (not tracked yet: null).
    pub last_used: Option<DateTime>,
    /// Requests per 15 minutes.
    pub rate_limit: Option<i32>,
    /// Requests made (not tracked yet: 0).
    pub num_queries: Option<i32>,
    /// The owner's id.
    pub user: Option<Uuid>,
    /// Names of the owner's projects.
    pub projects: Option<Vec<Option<String>>>,
    /// SSH public key for its sessions (none yet).
    pub ssh_public_key: Option<String>,
    /// Sessions running on it (none until sessions exist).
    pub concurrency_used: Option<i32>,
    /// The owner.
    pub user_info: Option<UserInfo>,
    /// Deprecated: the policy's `max_concurrent_sessions`.
    pub concurrency_limit: Option<i32>,
}

/// A page of keypairs.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct KeyPairList {
    /// The page.
    pub items: Vec<Option<KeyPair>>,
    /// How many match, over all pages.
    pub total_count: i32,
}

/// A domain.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct Domain {
    /// Its name.
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Whether its users may work.
    pub is_active: Option<bool>,
    /// Creation time.
    pub created_at: Option<DateTime>,
    /// Last change.
    pub modified_at: Option<DateTime>,
    /// Resource limits (slot → amount).
    pub total_resource_slots: Option<JsonString>,
    /// Storage hosts and permissions.
    pub allowed_vfolder_hosts: Option<JsonString>,
    /// Registries its users may pull from.
    pub allowed_docker_registries: Option<Vec<Option<String>>>,
    /// External id.
    pub integration_id: Option<String>,
    /// Scaling groups associated with it.
    pub scaling_groups: Option<Vec<Option<String>>>,
}

/// A project (the reference's "group").
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct Group {
    /// Its id.
    pub id: Option<Uuid>,
    /// Its name (unique in its domain).
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Whether its members may use it.
    pub is_active: Option<bool>,
    /// Creation time.
    pub created_at: Option<DateTime>,
    /// Last change.
    pub modified_at: Option<DateTime>,
    /// Its domain.
    pub domain_name: Option<String>,
    /// Resource limits (slot → amount).
    pub total_resource_slots: Option<JsonString>,
    /// Storage hosts and permissions.
    pub allowed_vfolder_hosts: Option<JsonString>,
    /// External id.
    pub integration_id: Option<String>,
    /// Project resource policy.
    pub resource_policy: Option<String>,
    /// Scaling groups associated with it.
    pub scaling_groups: Option<Vec<Option<String>>>,
}

/// A keypair resource policy.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct KeyPairResourcePolicy {
    /// Its name.
    pub name: Option<String>,
    /// Creation time.
    pub created_at: Option<DateTime>,
    /// `LIMITED` or `UNLIMITED`: slots missing from `total_resource_slots`.
    pub default_for_unspecified: Option<String>,
    /// Resource limits (slot → amount).
    pub total_resource_slots: Option<JsonString>,
    /// Seconds a session may live (0: forever).
    pub max_session_lifetime: Option<i32>,
    /// Sessions at once.
    pub max_concurrent_sessions: Option<i32>,
    /// SFTP sessions at once.
    pub max_concurrent_sftp_sessions: Option<i32>,
    /// Kernels per session.
    pub max_containers_per_session: Option<i32>,
    /// Seconds of idleness before a session is terminated.
    pub idle_timeout: Option<BigInt>,
    /// Storage hosts and permissions.
    pub allowed_vfolder_hosts: Option<JsonString>,
    /// Deprecated: vfolders per user.
    pub max_vfolder_count: Option<i32>,
    /// Deprecated: bytes per vfolder.
    pub max_vfolder_size: Option<BigInt>,
    /// Deprecated: bytes per quota scope.
    pub max_quota_scope_size: Option<BigInt>,
}

/// A scaling group.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct ScalingGroup {
    /// Its name.
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Whether sessions may be scheduled in it.
    pub is_active: Option<bool>,
    /// Whether every user may see it.
    pub is_public: Option<bool>,
    /// Creation time.
    pub created_at: Option<DateTime>,
    /// The app proxy address.
    pub wsproxy_addr: Option<String>,
    /// The app proxy API token (not kept: null).
    pub wsproxy_api_token: Option<String>,
    /// Agent provisioning driver.
    pub driver: Option<String>,
    /// Driver options.
    pub driver_opts: Option<JsonString>,
    /// `fifo`, `lifo` or `drf`.
    pub scheduler: Option<String>,
    /// Scheduler options.
    pub scheduler_opts: Option<JsonString>,
    /// Whether kernels use the host network.
    pub use_host_network: Option<bool>,
}

/// A user resource policy.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct UserResourcePolicy {
    /// Same as `name`.
    pub id: Option<ID>,
    /// Its name.
    pub name: Option<String>,
    /// Creation time.
    pub created_at: Option<DateTime>,
    /// Vfolders a user may own (0: no limit).
    pub max_vfolder_count: Option<i32>,
    /// Bytes of a user's quota scope (-1: no limit).
    pub max_quota_scope_size: Option<BigInt>,
    /// Sessions per model service.
    pub max_session_count_per_model_session: Option<i32>,
    /// Customized images a user may keep.
    pub max_customized_image_count: Option<i32>,
}

/// A project resource policy.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct ProjectResourcePolicy {
    /// Same as `name`.
    pub id: Option<ID>,
    /// Its name.
    pub name: Option<String>,
    /// Creation time.
    pub created_at: Option<DateTime>,
    /// Vfolders a project may own (0: no limit).
    pub max_vfolder_count: Option<i32>,
    /// Bytes of a project's quota scope (-1: no limit).
    pub max_quota_scope_size: Option<BigInt>,
    /// Networks a project may create (-1: no limit).
    pub max_network_count: Option<i32>,
}

/// A resource preset.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct ResourcePreset {
    /// Its name.
    pub name: Option<String>,
    /// Slot name → amount (decimal strings).
    pub resource_slots: Option<JsonString>,
    /// Shared memory in bytes, if set.
    pub shared_memory: Option<BigInt>,
    /// The scaling group it is for (none: all).
    pub scaling_group_name: Option<String>,
}

/// An agent (a compute node), as superadmins see it.
///
/// Fields fed by the agent's live reports (`live_stat`, `cpu_cur_pct`,
/// `mem_cur_bytes`, `container_count`) or by asking the agent
/// (`hardware_metadata`, `local_config`) are not collected yet: they answer
/// null, or 0 where the reference answers 0 without a report.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct Agent {
    /// The agent's id (agent-chosen, e.g. `i-hostname`).
    pub id: Option<ID>,
    /// `ALIVE`, `LOST`, `TERMINATED` or `DECOMMISSIONED`.
    pub status: Option<String>,
    /// When the status last changed.
    pub status_changed: Option<DateTime>,
    /// Its region.
    pub region: Option<String>,
    /// The scaling group it belongs to.
    pub scaling_group: Option<String>,
    /// Whether new sessions may be placed on it.
    pub schedulable: Option<bool>,
    /// Its capacity (slot → amount).
    pub available_slots: Option<JsonString>,
    /// What its kernels hold (slot → amount).
    pub occupied_slots: Option<JsonString>,
    /// Its RPC address (`tcp://host:port`).
    pub addr: Option<String>,
    /// CPU architecture.
    pub architecture: Option<String>,
    /// When it first joined.
    pub first_contact: Option<DateTime>,
    /// When it was last lost or stopped (null while alive).
    pub lost_at: Option<DateTime>,
    /// Live node and device statistics (not collected yet: null).
    pub live_stat: Option<JsonString>,
    /// The agent software's version.
    pub version: Option<String>,
    /// Compute plugins and their versions.
    pub compute_plugins: Option<JsonString>,
    /// Hardware facts the agent reports on request (not asked yet: null).
    pub hardware_metadata: Option<JsonString>,
    /// Whether it kills kernels reported for abuse.
    pub auto_terminate_abusing_kernel: Option<bool>,
    /// The agent's own configuration (not asked yet: null).
    pub local_config: Option<JsonString>,
    /// Containers it runs (not counted yet: 0).
    pub container_count: Option<i32>,
    /// Legacy: memory capacity in MiB.
    pub mem_slots: Option<i32>,
    /// Legacy: CPU capacity.
    pub cpu_slots: Option<f64>,
    /// Legacy: `cuda.device` capacity.
    pub gpu_slots: Option<f64>,
    /// Legacy: `tpu.device` capacity.
    pub tpu_slots: Option<f64>,
    /// Legacy: memory held by kernels in MiB.
    pub used_mem_slots: Option<i32>,
    /// Legacy: CPU held by kernels.
    pub used_cpu_slots: Option<f64>,
    /// Legacy: `cuda.device` held by kernels.
    pub used_gpu_slots: Option<f64>,
    /// Legacy: `tpu.device` held by kernels.
    pub used_tpu_slots: Option<f64>,
    /// CPU use in percent (no live report yet: 0).
    pub cpu_cur_pct: Option<f64>,
    /// Memory in use in bytes (no live report yet: 0).
    pub mem_cur_bytes: Option<f64>,
}

/// A page of agents.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct AgentList {
    /// The page.
    pub items: Vec<Option<Agent>>,
    /// How many match, over all pages.
    pub total_count: i32,
}

/// What a user who is not a superadmin may know of an agent: enough to see
/// the capacity of the scaling groups it may use, nothing of where or what
/// the agent is.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct AgentSummary {
    /// The agent's id.
    pub id: Option<ID>,
    /// `ALIVE`, `LOST`, `TERMINATED` or `DECOMMISSIONED`.
    pub status: Option<String>,
    /// The scaling group it belongs to.
    pub scaling_group: Option<String>,
    /// Whether new sessions may be placed on it.
    pub schedulable: Option<bool>,
    /// Its capacity (slot → amount).
    pub available_slots: Option<JsonString>,
    /// What its kernels hold (slot → amount).
    pub occupied_slots: Option<JsonString>,
    /// CPU architecture.
    pub architecture: Option<String>,
}

/// A page of agent summaries.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct AgentSummaryList {
    /// The page.
    pub items: Vec<Option<AgentSummary>>,
    /// How many match, over all pages.
    pub total_count: i32,
}
