//! Reading `POST /session` bodies: key aliases, the reference's coercions
//! (booleans and integers as strings), unknown keys refused, and every
//! problem of a body reported at once as `{field: message}`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use manager_events::session::{ClusterMode, SessionType};
use manager_events::slots::SlotAmount;
use manager_events::{Problem, ProblemKind};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The most kernels one session may have, whatever its policy allows.
pub const MAX_CLUSTER_SIZE: u32 = 256;

/// A parsed `POST /session` body (not yet checked against the cluster).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateRequest {
    /// The session's name.
    pub name: String,
    /// The image reference or alias.
    pub image: String,
    /// The architecture asked for.
    pub architecture: String,
    /// What the session is for.
    pub session_type: SessionType,
    /// The project's name.
    pub group: String,
    /// The domain's name.
    pub domain: String,
    /// Kernels.
    pub cluster_size: u32,
    /// How they are spread.
    pub cluster_mode: ClusterMode,
    /// Free text.
    pub tag: Option<String>,
    /// Answer right after the enqueue.
    pub enqueue_only: bool,
    /// Seconds to hold the request (0: until the session starts).
    pub max_wait_seconds: u64,
    /// Not before (batch sessions).
    pub starts_at: Option<DateTime<Utc>>,
    /// Reuse a live session of that name.
    pub reuse_if_exists: bool,
    /// The batch command.
    pub startup_command: Option<String>,
    /// A script run when each kernel starts.
    pub bootstrap_script: Option<String>,
    /// Sessions to wait for: ids, or names of the owner's sessions.
    pub dependencies: Vec<String>,
    /// Lifecycle webhook.
    pub callback_url: Option<String>,
    /// Create on behalf of this keypair.
    pub owner_access_key: Option<String>,
    /// vfolder names.
    pub mounts: Vec<String>,
    /// vfolder name → path.
    pub mount_map: BTreeMap<String, String>,
    /// Environment.
    pub environ: BTreeMap<String, String>,
    /// The scaling group asked for.
    pub scaling_group: Option<String>,
    /// Slots per kernel, as given (slot → amount).
    pub resources: BTreeMap<String, SlotAmount>,
    /// Resource options.
    pub resource_opts: BTreeMap<String, String>,
    /// Ports to open up front.
    pub preopen_ports: Vec<u16>,
    /// Agents chosen by a superadmin.
    pub agent_list: Vec<String>,
}

/// Collects field errors.
#[derive(Debug, Default)]
pub struct Errors(Map<String, Value>);

impl Errors {
    /// Records that `field` is wrong.
    pub fn add(&mut self, field: &str, msg: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| Value::String(msg.into()));
    }

    /// `Ok` when nothing was recorded, else the validation problem.
    pub fn into_result(self) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Problem::new(ProblemKind::InvalidApiParams)
                .msg("Input validation error")
                .data(Value::Object(self.0)))
        }
    }
}

/// Reads a size in bytes: a number with an optional binary unit (`k`,
/// `m`, `g`, `t`, `p`, case-insensitive, optionally followed by `i`
/// and/or `b`): `"1g"` is 1073741824, `"256m"` 268435456, `"1024"` bytes.
pub fn parse_bytes(text: &str) -> Option<SlotAmount> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (number, shift) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 10),
        'm' => (&t[..t.len() - 1], 20),
        'g' => (&t[..t.len() - 1], 30),
        't' => (&t[..t.len() - 1], 40),
        'p' => (&t[..t.len() - 1], 50),
        _ => (t, 0),
    };
    let amount = SlotAmount::parse(number).ok()?;
    let SlotAmount::Finite(v) = amount else {
        return None;
    };
    let bytes = v.checked_mul(1i128 << shift)?;
    // Whole bytes only.
    let scale = 10i128.pow(manager_events::slots::SLOT_DECIMALS);
    Some(SlotAmount::Finite(bytes / scale * scale))
}

/// Reads a relative duration (`"90s"`, `"10m"`, `"2h"`, `"1d"`, `"1w"`).
pub fn parse_duration(text: &str) -> Option<chrono::Duration> {
    let t = text.trim();
    let unit = t.chars().last()?;
    let n: i64 = t[..t.len() - unit.len_utf8()].trim().parse().ok()?;
    if n < 0 {
        return None;
    }
    Some(match unit {
        's' => chrono::Duration::seconds(n),
        'm' => chrono::Duration::minutes(n),
        'h' => chrono::Duration::hours(n),
        'd' => chrono::Duration::days(n),
        'w' => chrono::Duration::weeks(n),
        _ => return None,
    })
}

/// The reference's `ToBool`: JSON booleans, or `true/false/1/0/yes/no`.
pub fn to_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "on" => Some(true),
            "false" | "0" | "no" | "n" | "off" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn to_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn to_opt_string(v: &Value) -> Result<Option<String>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err("must be a string"),
    }
}

/// Whether `name` is a valid session name: 4–64 ASCII characters, word
/// characters, `.` and `-`, starting and ending with a word character.
pub fn valid_session_name(name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    (4..=64).contains(&name.len())
        && name.chars().all(|c| word(c) || c == '.' || c == '-')
        && name.chars().next().is_some_and(word)
        && name.chars().last().is_some_and(word)
}

/// Takes the first present key of `aliases` out of `map`.
fn take(map: &mut Map<String, Value>, aliases: &[&str]) -> Option<(String, Value)> {
    let mut found = None;
    for a in aliases {
        if let Some(v) = map.remove(*a)
            && found.is_none()
        {
            found = Some(((*a).to_owned(), v));
        }
    }
    found
}

impl CreateRequest {
    /// Reads a body. Every problem is reported at once.
    pub fn parse(body: &[u8]) -> Result<CreateRequest, Problem> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| Problem::new(ProblemKind::InvalidApiParams).msg("Malformed body"))?;
        let Value::Object(mut map) = value else {
            return Err(Problem::new(ProblemKind::InvalidApiParams).msg("Malformed body"));
        };
        let mut errors = Errors::default();
        let mut req = CreateRequest {
            architecture: manager_events::image::DEFAULT_ARCHITECTURE.into(),
            group: "default".into(),
            domain: "default".into(),
            cluster_size: 1,
            reuse_if_exists: true,
            ..CreateRequest::default()
        };
        match take(&mut map, &["name", "session_name", "clientSessionToken"]) {
            Some((_, Value::String(name))) => {
                if name == "from-template" {
                    errors.add("name", "from-template is a reserved name");
                } else if !valid_session_name(&name) {
                    errors.add(
                        "name",
                        "4 to 64 letters, digits, '_', '.' or '-', starting and ending with a \
                         letter, digit or '_'",
                    );
                }
                req.name = name;
            }
            Some(_) => errors.add("name", "must be a string"),
            None => errors.add("name", "is required"),
        }
        match take(&mut map, &["image", "lang"]) {
            Some((_, Value::String(image))) if !image.trim().is_empty() => req.image = image,
            Some(_) => errors.add("image", "must be a non-empty string"),
            None => errors.add("image", "is required"),
        }
        if let Some((k, v)) = take(&mut map, &["architecture", "arch"]) {
            match v {
                Value::String(a) if !a.is_empty() => req.architecture = a,
                Value::Null => {}
                _ => errors.add(&k, "must be a string"),
            }
        }
        if let Some((k, v)) = take(&mut map, &["type", "sessionType"]) {
            match v.as_str() {
                Some("interactive") => req.session_type = SessionType::Interactive,
                Some("batch") => req.session_type = SessionType::Batch,
                Some("inference") => req.session_type = SessionType::Inference,
                _ if v.is_null() => {}
                _ => errors.add(&k, "must be interactive, batch or inference"),
            }
        }
        for (aliases, slot) in [
            (&["group", "groupName", "group_name"][..], &mut req.group),
            (
                &["domain", "domainName", "domain_name"][..],
                &mut req.domain,
            ),
        ] {
            if let Some((k, v)) = take(&mut map, aliases) {
                match v {
                    Value::String(s) if !s.is_empty() => *slot = s,
                    Value::Null => {}
                    _ => errors.add(&k, "must be a non-empty string"),
                }
            }
        }
        if let Some((k, v)) = take(&mut map, &["cluster_size", "clusterSize"]) {
            match to_u64(&v) {
                Some(n) if (1..=u64::from(MAX_CLUSTER_SIZE)).contains(&n) => {
                    req.cluster_size = u32::try_from(n).unwrap_or(1);
                }
                _ => errors.add(
                    &k,
                    format!("must be an integer from 1 to {MAX_CLUSTER_SIZE}"),
                ),
            }
        }
        if let Some((k, v)) = take(&mut map, &["cluster_mode", "clusterMode"]) {
            match v.as_str() {
                Some("single-node") => req.cluster_mode = ClusterMode::SingleNode,
                Some("multi-node") => req.cluster_mode = ClusterMode::MultiNode,
                _ if v.is_null() => {}
                _ => errors.add(&k, "must be single-node or multi-node"),
            }
        }
        if let Some((k, v)) = take(&mut map, &["tag"]) {
            match to_opt_string(&v) {
                Ok(t) => req.tag = t,
                Err(e) => errors.add(&k, e),
            }
        }
        for (aliases, slot) in [
            (&["enqueueOnly", "enqueue_only"][..], &mut req.enqueue_only),
            (
                &["reuseIfExists", "reuse_if_exists"][..],
                &mut req.reuse_if_exists,
            ),
        ] {
            if let Some((k, v)) = take(&mut map, aliases) {
                match to_bool(&v) {
                    Some(b) => *slot = b,
                    None => errors.add(&k, "must be a boolean"),
                }
            }
        }
        if let Some((k, v)) = take(&mut map, &["maxWaitSeconds", "max_wait_seconds"]) {
            match to_u64(&v) {
                Some(n) => req.max_wait_seconds = n,
                None => errors.add(&k, "must be an integer ≥ 0"),
            }
        }
        if let Some((k, v)) = take(&mut map, &["starts_at", "startsAt"]) {
            match v {
                Value::Null => {}
                Value::String(s) => {
                    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
                        req.starts_at = Some(t.with_timezone(&Utc));
                    } else if let Some(d) = parse_duration(&s) {
                        req.starts_at = Some(Utc::now() + d);
                    } else {
                        errors.add(&k, "must be an ISO 8601 time or a duration like 1h");
                    }
                }
                _ => errors.add(&k, "must be a string"),
            }
        }
        for (aliases, slot) in [
            (
                &["startupCommand", "startup_command"][..],
                &mut req.startup_command,
            ),
            (
                &["bootstrap_script", "bootstrapScript"][..],
                &mut req.bootstrap_script,
            ),
            (
                &["callback_url", "callbackUrl", "callbackURL"][..],
                &mut req.callback_url,
            ),
            (&["owner_access_key"][..], &mut req.owner_access_key),
        ] {
            if let Some((k, v)) = take(&mut map, aliases) {
                match to_opt_string(&v) {
                    Ok(s) => *slot = s.filter(|s| !s.is_empty()),
                    Err(e) => errors.add(&k, e),
                }
            }
        }
        if let Some(url) = &req.callback_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            errors.add("callback_url", "must be an http(s) URL");
        }
        if req.session_type == SessionType::Batch && req.startup_command.is_none() {
            errors.add("startupCommand", "is required for batch sessions");
        }
        if req.starts_at.is_some() && req.session_type != SessionType::Batch {
            errors.add("starts_at", "is only for batch sessions");
        }
        if let Some((k, v)) = take(&mut map, &["dependencies"]) {
            match v {
                Value::Null => {}
                Value::Array(items) => {
                    for item in items {
                        match item {
                            Value::String(s) if !s.is_empty() => req.dependencies.push(s),
                            _ => {
                                errors.add(&k, "must be a list of session ids or names");
                                break;
                            }
                        }
                    }
                }
                _ => errors.add(&k, "must be a list of session ids or names"),
            }
        }
        if let Some((k, v)) = take(&mut map, &["config"]) {
            match v {
                Value::Null => {}
                Value::Object(config) => req.parse_config(config, &mut errors),
                _ => errors.add(&k, "must be an object"),
            }
        }
        for unknown in map.keys() {
            errors.add(unknown, "unknown key");
        }
        errors.into_result()?;
        Ok(req)
    }

    fn parse_config(&mut self, mut map: Map<String, Value>, errors: &mut Errors) {
        if let Some((k, v)) = take(&mut map, &["mounts"]) {
            match v {
                Value::Null => {}
                Value::Array(items) => {
                    for item in items {
                        match item {
                            Value::String(s) if !s.is_empty() => self.mounts.push(s),
                            _ => {
                                errors.add(&k, "must be a list of folder names");
                                break;
                            }
                        }
                    }
                }
                _ => errors.add(&k, "must be a list of folder names"),
            }
        }
        for (aliases, slot, what) in [
            (
                &["mount_map", "mountMap"][..],
                &mut self.mount_map,
                "mount_map",
            ),
            (&["environ"][..], &mut self.environ, "environ"),
            (
                &["resource_opts", "resourceOpts"][..],
                &mut self.resource_opts,
                "resource_opts",
            ),
        ] {
            if let Some((k, v)) = take(&mut map, aliases) {
                match v {
                    Value::Null => {}
                    Value::Object(m) => {
                        for (name, value) in m {
                            let text = match value {
                                Value::String(s) => s,
                                Value::Number(n) if what == "resource_opts" => n.to_string(),
                                _ => {
                                    errors.add(&k, format!("{name:?}: values must be strings"));
                                    continue;
                                }
                            };
                            if what == "environ"
                                && (name.is_empty()
                                    || name.contains('=')
                                    || name.contains('\0')
                                    || text.contains('\0'))
                            {
                                errors.add(&k, format!("{name:?} is not a valid variable"));
                                continue;
                            }
                            slot.insert(name, text);
                        }
                    }
                    _ => errors.add(&k, "must be an object of strings"),
                }
            }
        }
        for (name, target) in &self.mount_map {
            if !self.mounts.contains(name) {
                errors.add("mount_map", format!("{name:?} is not among the mounts"));
            }
            if target.is_empty() || target.contains("..") {
                errors.add("mount_map", format!("{target:?} is not a valid path"));
            }
        }
        if let Some((k, v)) = take(&mut map, &["scaling_group", "scalingGroup"]) {
            match to_opt_string(&v) {
                Ok(s) => self.scaling_group = s.filter(|s| !s.is_empty()),
                Err(e) => errors.add(&k, e),
            }
        }
        if let Some((k, v)) = take(&mut map, &["resources"]) {
            match v {
                Value::Null => {}
                Value::Object(m) => {
                    for (slot, value) in m {
                        let text = match &value {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            _ => {
                                errors.add(&k, format!("{slot}: must be a number"));
                                continue;
                            }
                        };
                        let amount = if slot == "mem" {
                            parse_bytes(&text)
                        } else {
                            SlotAmount::parse(&text).ok()
                        };
                        match amount {
                            Some(a) if a.is_negative() => {
                                errors.add(&k, format!("{slot}: must not be negative"));
                            }
                            Some(SlotAmount::Infinity) | None => {
                                errors.add(&k, format!("{slot}: {text:?} is not an amount"));
                            }
                            Some(a) => {
                                self.resources.insert(slot, a);
                            }
                        }
                    }
                }
                _ => errors.add(&k, "must be an object"),
            }
        }
        if let Some((k, v)) = take(&mut map, &["preopen_ports", "preopenPorts"]) {
            match v {
                Value::Null => {}
                Value::Array(items) => {
                    for item in items {
                        match to_u64(&item) {
                            Some(p) if (1024..=65535).contains(&p) => {
                                self.preopen_ports.push(u16::try_from(p).unwrap_or(0));
                            }
                            _ => {
                                errors.add(&k, "ports must be integers from 1024 to 65535");
                                break;
                            }
                        }
                    }
                }
                _ => errors.add(&k, "must be a list of ports"),
            }
        }
        if let Some((k, v)) = take(&mut map, &["agent_list", "agentList"]) {
            match v {
                Value::Null => {}
                Value::Array(items) => {
                    for item in items {
                        match item {
                            Value::String(s) if !s.is_empty() => self.agent_list.push(s),
                            _ => {
                                errors.add(&k, "must be a list of agent ids");
                                break;
                            }
                        }
                    }
                }
                _ => errors.add(&k, "must be a list of agent ids"),
            }
        }
        for unknown in map.keys() {
            errors.add(&format!("config.{unknown}"), "unknown key");
        }
    }

    /// Dependencies that are session ids.
    pub fn dependency_ids(&self) -> Vec<Option<Uuid>> {
        self.dependencies.iter().map(|d| d.parse().ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(body: &str) -> Value {
        match CreateRequest::parse(body.as_bytes()) {
            Ok(r) => panic!("accepted: {r:?}"),
            Err(p) => p.data.unwrap_or(Value::Null),
        }
    }

    #[test]
    fn the_official_clients_body_is_read_with_its_aliases() {
        let body = r#"{"tag": "mytag", "name": "mysess",
 "config": {"mounts": ["data1", "data2"], "environ": {"FOO": "bar"},
            "resources": {"cpu": "2", "mem": "1g", "cuda.shares": "0.5"},
            "resource_opts": {}, "scalingGroup": "default",
            "mount_map": {"data2": "/home/work/d2"}, "preopen_ports": null},
 "dependencies": [], "callback_url": null, "architecture": "x86_64",
 "clusterSize": 2, "clusterMode": "multi-node", "starts_at": null,
 "bootstrap_script": null, "owner_access_key": null, "domain": "default",
 "group": "default", "type": "batch", "enqueueOnly": true, "maxWaitSeconds": 0,
 "reuseIfExists": true, "startupCommand": "python main.py",
 "image": "python:3.9-ubuntu20.04"}"#;
        let r = CreateRequest::parse(body.as_bytes()).unwrap();
        assert_eq!(r.name, "mysess");
        assert_eq!(r.cluster_size, 2);
        assert_eq!(r.cluster_mode, ClusterMode::MultiNode);
        assert_eq!(r.session_type, SessionType::Batch);
        assert!(r.enqueue_only);
        assert_eq!(r.resources["mem"], SlotAmount::from_int(1 << 30));
        assert_eq!(
            r.resources["cuda.shares"],
            SlotAmount::parse("0.5").unwrap()
        );
        assert_eq!(r.scaling_group.as_deref(), Some("default"));
        assert_eq!(r.mount_map["data2"], "/home/work/d2");
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let e = errors_of(
            r#"{"name": "x", "image": "", "clusterSize": 0, "type": "batch",
                "config": {"resources": {"cpu": "-1", "mem": "lots"}, "environ": {"A": 1},
                           "bogus": 1},
                "dependencies": "abc", "surprise": true}"#,
        );
        for field in [
            "name",
            "image",
            "clusterSize",
            "startupCommand",
            "resources",
            "environ",
            "config.bogus",
            "dependencies",
            "surprise",
        ] {
            assert!(e.get(field).is_some(), "{field} not reported in {e}");
        }
        assert!(CreateRequest::parse(b"not json").is_err());
        assert!(CreateRequest::parse(b"[1]").is_err());
    }

    #[test]
    fn sizes_and_durations_read_as_the_client_writes_them() {
        assert_eq!(parse_bytes("256m"), Some(SlotAmount::from_int(256 << 20)));
        assert_eq!(parse_bytes("1G"), Some(SlotAmount::from_int(1 << 30)));
        assert_eq!(parse_bytes("512MiB"), Some(SlotAmount::from_int(512 << 20)));
        assert_eq!(parse_bytes("1024"), Some(SlotAmount::from_int(1024)));
        assert_eq!(parse_bytes("1.5k"), Some(SlotAmount::from_int(1536)));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_duration("2h"), Some(chrono::Duration::hours(2)));
        assert_eq!(parse_duration("x"), None);
        assert!(valid_session_name("my.sess-1"));
        assert!(!valid_session_name("abc"));
        assert!(!valid_session_name("-abc"));
        assert!(!valid_session_name("séance"));
    }
}
