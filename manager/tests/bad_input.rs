//! Bad input, table-driven: malformed requests of every kind each get a
//! clear answer — problem+json with the right status at the HTTP level, the
//! reference's `ok: false` or a GraphQL error inside GraphQL — and none of
//! them changes the log.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use chrono::{Duration, SecondsFormat, Utc};
use common::{ADMIN_AK, ADMIN_SK, Server, log_head, signed, signed_json, start_with_fixture};
use manager_events::testing::TestDb;
use serde_json::{Value, json};

/// What a case must be answered with.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// problem+json with this status and type slug.
    Problem(u16, &'static str),
    /// 200 from `/admin/gql` with `data.<field>.ok == false`.
    NotOk(&'static str),
    /// 200 from `/admin/gql` with GraphQL errors and no data.
    GqlError,
}

/// How a case is sent.
enum Send {
    /// Signed by the superadmin, raw body (JSON content type).
    Signed(&'static str, String, Vec<u8>, Vec<(&'static str, String)>),
    /// A GraphQL document with variables, signed by the superadmin.
    Gql(String, Value),
    /// Unsigned, raw body.
    Unsigned(&'static str, &'static str, &'static str),
    /// Signed GET with a date this far off.
    SkewedGet(&'static str, i64),
    /// A request with a malformed Authorization header.
    BadAuthHeader(&'static str),
    /// Signed GET with an unsupported API version header.
    BadVersion(&'static str),
}

struct Case {
    what: &'static str,
    send: Send,
    expect: Expect,
}

fn post(path: &'static str, body: impl Into<Vec<u8>>) -> Send {
    Send::Signed(path, "POST".into(), body.into(), Vec::new())
}

fn gql(doc: &str) -> Send {
    Send::Gql(doc.to_owned(), json!({}))
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let huge = "x".repeat(10_000);
    let c = |what, send, expect| Case { what, send, expect };
    vec![
        // -- HTTP level: bodies, parameters, methods, headers.
        c(
            "GraphQL body is not JSON",
            post("/admin/gql", "not json"),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "GraphQL body is a JSON array",
            post("/admin/gql", "[]"),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "GraphQL query of the wrong type",
            post("/admin/gql", r#"{"query": 1}"#),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "GraphQL body without a query",
            post("/admin/gql", r#"{"variables": {}}"#),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "GraphQL body with an unknown key",
            post(
                "/admin/gql",
                r#"{"query": "{ keypair { access_key } }", "hack": true}"#,
            ),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "GraphQL variables not an object",
            post(
                "/admin/gql",
                r#"{"query": "{ keypair { access_key } }", "variables": [1, 2]}"#,
            ),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "GraphQL body of 2 MiB",
            post(
                "/admin/gql",
                format!(r#"{{"query": "{}"}}"#, "#".repeat(2 << 20)),
            ),
            Problem(413, "payload-too-large"),
        ),
        c(
            "GraphQL over GET",
            Send::Signed("/admin/gql", "GET".into(), Vec::new(), Vec::new()),
            Problem(405, "method-not-allowed"),
        ),
        c(
            "an Idempotency-Key of 300 characters",
            Send::Signed(
                "/admin/gql",
                "POST".into(),
                br#"{"query": "{ keypair { access_key } }"}"#.to_vec(),
                vec![("Idempotency-Key", "k".repeat(300))],
            ),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "check-presets body is not JSON",
            post("/resource/check-presets", "{bad"),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "check-presets with an unknown key",
            post(
                "/resource/check-presets",
                r#"{"scaling_group": null, "nope": 1}"#,
            ),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "check-presets scaling_group of the wrong type",
            post("/resource/check-presets", r#"{"scaling_group": 5}"#),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "check-presets in an unknown scaling group",
            post("/resource/check-presets", r#"{"scaling_group": "nope"}"#),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "check-presets in an unknown project",
            post("/resource/check-presets", r#"{"group": "no-such-project"}"#),
            Problem(404, "object-not-found"),
        ),
        c(
            "auth/role with a group that is not a UUID",
            Send::Signed(
                "/auth/role?group=1%27%20OR%201%3D1",
                "GET".into(),
                Vec::new(),
                Vec::new(),
            ),
            Problem(400, "invalid-api-params"),
        ),
        c(
            "auth/role with an unknown group",
            Send::Signed(
                "/auth/role?group=00000000-0000-0000-0000-000000000000",
                "GET".into(),
                Vec::new(),
                Vec::new(),
            ),
            Problem(404, "object-not-found"),
        ),
        c(
            "an unsigned GraphQL request",
            Send::Unsigned(
                "POST",
                "/admin/gql",
                r#"{"query": "mutation { delete_domain(name: \"default\") { ok } }"}"#,
            ),
            Problem(401, "auth-failed"),
        ),
        c(
            "an unsigned presets request",
            Send::Unsigned("GET", "/resource/presets", ""),
            Problem(401, "auth-failed"),
        ),
        c(
            "a date 20 minutes old",
            Send::SkewedGet("/resource/presets", -20),
            Problem(400, "invalid-auth-params"),
        ),
        c(
            "a malformed Authorization header",
            Send::BadAuthHeader("/resource/presets"),
            Problem(400, "invalid-auth-params"),
        ),
        c(
            "an unsupported API version",
            Send::BadVersion("/resource/presets"),
            Problem(400, "generic-bad-request"),
        ),
        c(
            "an unknown path",
            Send::Signed("/admin/nope", "POST".into(), b"{}".to_vec(), Vec::new()),
            Problem(404, "url-not-found"),
        ),
        // -- Inside GraphQL: invalid values are refused by the invariants.
        c(
            "an unknown role",
            gql(
                r#"mutation { create_user(email: "a@example.com", props: {username: "a", password: "p", need_password_change: false, role: "overlord"}) { ok msg } }"#,
            ),
            NotOk("create_user"),
        ),
        c(
            "an empty e-mail",
            gql(
                r#"mutation { create_user(email: "", props: {username: "a", password: "p", need_password_change: false}) { ok msg } }"#,
            ),
            NotOk("create_user"),
        ),
        c(
            "a 10,000-character username",
            gql(&format!(
                r#"mutation {{ create_user(email: "b@example.com", props: {{username: "{huge}", password: "p", need_password_change: false}}) {{ ok msg }} }}"#
            )),
            NotOk("create_user"),
        ),
        c(
            "a user in an unknown domain",
            gql(
                r#"mutation { create_user(email: "c@example.com", props: {username: "c", password: "p", need_password_change: false, domain_name: "nowhere"}) { ok msg } }"#,
            ),
            NotOk("create_user"),
        ),
        c(
            "a duplicate e-mail in other case",
            gql(
                r#"mutation { create_user(email: "ADMIN@lablup.com", props: {username: "d", password: "p", need_password_change: false}) { ok msg } }"#,
            ),
            NotOk("create_user"),
        ),
        c(
            "an SQL-looking domain name",
            gql(
                r#"mutation { create_domain(name: "x'; DROP TABLE events;--", props: {}) { ok msg } }"#,
            ),
            NotOk("create_domain"),
        ),
        c(
            "a non-ASCII domain name",
            gql(r#"mutation { create_domain(name: "домен", props: {}) { ok msg } }"#),
            NotOk("create_domain"),
        ),
        c(
            "total_resource_slots that is not JSON",
            gql(
                r#"mutation { create_domain(name: "d1", props: {total_resource_slots: "{cpu"}) { ok msg } }"#,
            ),
            NotOk("create_domain"),
        ),
        c(
            "a negative slot amount",
            gql(
                r#"mutation { create_domain(name: "d2", props: {total_resource_slots: "{\"cpu\": -1}"}) { ok msg } }"#,
            ),
            NotOk("create_domain"),
        ),
        c(
            "a project in an unknown domain",
            gql(
                r#"mutation { create_group(name: "p", props: {domain_name: "nowhere"}) { ok msg } }"#,
            ),
            NotOk("create_group"),
        ),
        c(
            "a keypair with a negative rate limit",
            gql(
                r#"mutation { create_keypair(user_id: "user@lablup.com", props: {resource_policy: "default", rate_limit: -5}) { ok msg } }"#,
            ),
            NotOk("create_keypair"),
        ),
        c(
            "a keypair for an unknown user",
            gql(
                r#"mutation { create_keypair(user_id: "ghost@example.com", props: {resource_policy: "default", rate_limit: 5}) { ok msg } }"#,
            ),
            NotOk("create_keypair"),
        ),
        c(
            "a keypair with an unknown policy",
            gql(
                r#"mutation { create_keypair(user_id: "user@lablup.com", props: {resource_policy: "nope", rate_limit: 5}) { ok msg } }"#,
            ),
            NotOk("create_keypair"),
        ),
        c(
            "an unknown default_for_unspecified",
            gql(
                r#"mutation { create_keypair_resource_policy(name: "p1", props: {default_for_unspecified: "SOMETIMES", max_concurrent_sessions: 1, max_containers_per_session: 1, idle_timeout: 10}) { ok msg } }"#,
            ),
            NotOk("create_keypair_resource_policy"),
        ),
        c(
            "a negative session limit",
            gql(
                r#"mutation { create_keypair_resource_policy(name: "p2", props: {default_for_unspecified: "LIMITED", max_concurrent_sessions: -1, max_containers_per_session: 1, idle_timeout: 10}) { ok msg } }"#,
            ),
            NotOk("create_keypair_resource_policy"),
        ),
        c(
            "a preset memory that is not a size",
            gql(
                r#"mutation { create_resource_preset(name: "p3", props: {resource_slots: "{\"cpu\": 1, \"mem\": \"lots\"}"}) { ok msg } }"#,
            ),
            NotOk("create_resource_preset"),
        ),
        c(
            "an unknown user_update_mode",
            gql(
                r#"mutation { modify_group(gid: "00000000-0000-0000-0000-000000000000", props: {user_update_mode: "toggle", user_uuids: ["00000000-0000-0000-0000-000000000001"]}) { ok msg } }"#,
            ),
            NotOk("modify_group"),
        ),
        c(
            "a wrong argument type",
            gql(
                r#"mutation { create_user(email: "e@example.com", props: {username: "e", password: "p", need_password_change: "yes"}) { ok msg } }"#,
            ),
            GqlError,
        ),
        c(
            "a BigInt that is not a number",
            gql(
                r#"mutation { create_keypair_resource_policy(name: "p4", props: {default_for_unspecified: "LIMITED", max_concurrent_sessions: 1, max_containers_per_session: 1, idle_timeout: "soon"}) { ok msg } }"#,
            ),
            GqlError,
        ),
        c(
            "a negative limit",
            gql("{ user_list(limit: -1, offset: 0) { total_count } }"),
            GqlError,
        ),
        c(
            "a filter with a syntax error",
            gql(r#"{ user_list(limit: 5, offset: 0, filter: "email == ") { total_count } }"#),
            GqlError,
        ),
        c(
            "a filter on an unknown field",
            gql(
                r#"{ user_list(limit: 5, offset: 0, filter: "password_hash == \"x\"") { total_count } }"#,
            ),
            GqlError,
        ),
        c(
            "a filter comparing a date with garbage",
            gql(
                r#"{ user_list(limit: 5, offset: 0, filter: "created_at > \"yesterday-ish\"") { total_count } }"#,
            ),
            GqlError,
        ),
        c(
            "an order on an unknown field",
            gql(r#"{ keypair_list(limit: 5, offset: 0, order: "-secret_key") { total_count } }"#),
            GqlError,
        ),
        c(
            "a variable of the wrong type",
            Send::Gql(
                "query($id: UUID!) { group(id: $id) { name } }".into(),
                json!({"id": "not-a-uuid"}),
            ),
            GqlError,
        ),
    ]
}

async fn send(server: &Server, send: &Send) -> reqwest::Response {
    let admin = (ADMIN_AK, ADMIN_SK);
    let client = reqwest::Client::new();
    match send {
        Send::Signed(path, method, body, headers) => {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            signed_json(server, method, path, admin, body, &headers).await
        }
        Send::Gql(doc, vars) => {
            let body = json!({"query": doc, "variables": vars}).to_string();
            signed_json(server, "POST", "/admin/gql", admin, body.as_bytes(), &[]).await
        }
        Send::Unsigned(method, path, body) => client
            .request(method.parse().unwrap(), format!("{}{path}", server.base))
            .header("Content-Type", "application/json")
            .header("X-BackendAI-Version", "v7.20230615")
            .header(
                "Date",
                Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false),
            )
            .body(*body)
            .send()
            .await
            .unwrap(),
        Send::SkewedGet(path, minutes) => {
            let date = (Utc::now() + Duration::minutes(*minutes))
                .to_rfc3339_opts(SecondsFormat::Micros, false);
            signed(server, "GET", path, ADMIN_AK, ADMIN_SK, Some(date))
                .await
                .unwrap()
        }
        Send::BadAuthHeader(path) => client
            .get(format!("{}{path}", server.base))
            .header("X-BackendAI-Version", "v7.20230615")
            .header(
                "Date",
                Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false),
            )
            .header("Authorization", "BackendAI credential=garbage")
            .send()
            .await
            .unwrap(),
        Send::BadVersion(path) => client
            .get(format!("{}{path}", server.base))
            .header("X-BackendAI-Version", "v1.19990101")
            .header(
                "Date",
                Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false),
            )
            .header(
                "Authorization",
                format!("BackendAI signMethod=HMAC-SHA256, credential={ADMIN_AK}:00"),
            )
            .send()
            .await
            .unwrap(),
    }
}

#[tokio::test]
async fn every_malformed_request_is_answered_clearly_and_changes_nothing() {
    let db = TestDb::new().await;
    let server = start_with_fixture(&db).await;
    let cases = cases();
    assert!(cases.len() >= 30);
    let head = log_head(&db).await;
    let mut failures = Vec::new();
    for case in &cases {
        let r = send(&server, &case.send).await;
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let text = r.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let ok = match case.expect {
            Expect::Problem(want, slug) => {
                status == want
                    && content_type == "application/problem+json"
                    && body["type"] == format!("https://api.backend.ai/probs/{slug}")
                    && body["title"].is_string()
            }
            Expect::NotOk(field) => {
                status == 200
                    && body["data"][field]["ok"] == false
                    && body["data"][field]["msg"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty())
            }
            Expect::GqlError => {
                status == 200
                    && body["errors"][0]["message"].is_string()
                    && body.get("data").is_none_or(Value::is_null)
            }
        };
        if !ok {
            let shown: String = text.chars().take(300).collect();
            failures.push(format!(
                "{}: expected {:?}, got {status} {content_type} {shown}",
                case.what, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(log_head(&db).await, head, "bad input appended events");
}
