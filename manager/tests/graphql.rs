//! GraphQL against the real manager: scoping per role, pagination, filters,
//! mutations through the command port, idempotency and read-your-writes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{
    ADMIN_AK, ADMIN_SK, Server, USER_AK, USER_SK, gql, gql_with, log_head, signed_json,
    start_with_fixture as start,
};
use manager_events::testing::TestDb;
use serde_json::{Value, json};

const ADMIN: (&str, &str) = (ADMIN_AK, ADMIN_SK);
const USER: (&str, &str) = (USER_AK, USER_SK);

const CREATE_USER: &str = "mutation($email: String!, $input: UserInput!) {
    create_user(email: $email, props: $input) { ok msg user { uuid email domain_name role main_access_key groups { name } } } }";

const CREATE_KEYPAIR: &str = "mutation($user_id: String!, $input: KeyPairInput!) {
    create_keypair(user_id: $user_id, props: $input) { ok msg keypair { access_key secret_key user_id is_admin } } }";

const USER_LIST: &str = "query($limit:Int!, $offset:Int!, $filter: String, $order: String, $domain_name: String) {
    user_list(limit:$limit, offset:$offset, filter:$filter, order:$order, domain_name:$domain_name) {
      items { email domain_name } total_count } }";

async fn create_user(
    server: &Server,
    by: (&str, &str),
    email: &str,
    domain: &str,
    role: &str,
) -> Value {
    gql(
        server,
        by,
        CREATE_USER,
        json!({"email": email, "input": {
            "username": email.split('@').next().unwrap(), "password": "Passw0rd!",
            "need_password_change": false, "domain_name": domain, "role": role}}),
    )
    .await
}

/// Creates a keypair for `email` (as the superadmin); answers (ak, sk).
async fn keypair_for(server: &Server, email: &str, is_admin: bool) -> (String, String) {
    let r = gql(
        server,
        ADMIN,
        CREATE_KEYPAIR,
        json!({"user_id": email, "input": {"is_active": true, "is_admin": is_admin, "resource_policy": "default", "rate_limit": 1000}}),
    )
    .await;
    let kp = &r["data"]["create_keypair"]["keypair"];
    assert_eq!(r["data"]["create_keypair"]["ok"], true, "{r}");
    (
        kp["access_key"].as_str().unwrap().to_owned(),
        kp["secret_key"].as_str().unwrap().to_owned(),
    )
}

fn emails(r: &Value, field: &str) -> Vec<String> {
    r["data"][field]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {r}"))
        .iter()
        .map(|i| i["email"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn lists_page_filter_order_and_scope_by_role() {
    let db = TestDb::new().await;
    let server = start(&db).await;

    let r = gql(
        &server,
        ADMIN,
        "mutation { create_domain(name: \"other\", props: {description: \"x\"}) { ok msg domain { name } } }",
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["create_domain"]["domain"]["name"], "other", "{r}");
    for i in 0..12 {
        let r = create_user(
            &server,
            ADMIN,
            &format!("u{i:02}@example.com"),
            "default",
            "user",
        )
        .await;
        assert_eq!(r["data"]["create_user"]["ok"], true, "{r}");
        // Read-your-writes: the created user is in the payload, read back
        // from the read model, with its main keypair and default project.
        let user = &r["data"]["create_user"]["user"];
        assert_eq!(user["email"], format!("u{i:02}@example.com"));
        assert!(
            user["main_access_key"]
                .as_str()
                .unwrap()
                .starts_with("AKIA")
        );
        assert_eq!(user["groups"], json!([{"name": "default"}]));
    }
    for i in 0..3 {
        let r = create_user(&server, ADMIN, &format!("o{i}@other.org"), "other", "user").await;
        assert_eq!(r["data"]["create_user"]["ok"], true, "{r}");
    }
    let r = create_user(&server, ADMIN, "boss@other.org", "other", "admin").await;
    assert_eq!(r["data"]["create_user"]["ok"], true, "{r}");
    let other_admin = keypair_for(&server, "boss@other.org", true).await;

    // Pages: 2 fixture users + 12 + 3 + 1 = 18.
    let page =
        |offset: i32| json!({"limit": 5, "offset": offset, "filter": null, "order": "email"});
    let first = gql(&server, ADMIN, USER_LIST, page(0)).await;
    assert_eq!(first["data"]["user_list"]["total_count"], 18, "{first}");
    let mut all = Vec::new();
    for offset in (0..18).step_by(5) {
        let r = gql(&server, ADMIN, USER_LIST, page(offset)).await;
        all.extend(emails(&r, "user_list"));
    }
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "ordered by email across pages");
    assert_eq!(all.len(), 18);
    // Past the end: no items, the total still right.
    let r = gql(&server, ADMIN, USER_LIST, page(100)).await;
    assert_eq!(
        r["data"]["user_list"],
        json!({"items": [], "total_count": 18})
    );

    // Filters, with bound values and the reference's operators.
    let r = gql(
        &server,
        ADMIN,
        USER_LIST,
        json!({"limit": 50, "offset": 0, "filter": "email ilike \"%@OTHER.org\" & role == \"USER\"", "order": "-email"}),
    )
    .await;
    assert_eq!(
        emails(&r, "user_list"),
        ["o2@other.org", "o1@other.org", "o0@other.org"]
    );
    let r = gql(
        &server,
        ADMIN,
        USER_LIST,
        json!({"limit": 50, "offset": 0, "filter": "password_hash == \"x\"", "order": null}),
    )
    .await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field name \"password_hash\""),
        "{r}"
    );
    assert!(r["data"].is_null(), "{r}");
    let r = gql(
        &server,
        ADMIN,
        USER_LIST,
        json!({"limit": 5000, "offset": 0}),
    )
    .await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("limit"),
        "{r}"
    );

    // A domain admin sees its own domain only, whatever it asks for.
    let mine = (other_admin.0.as_str(), other_admin.1.as_str());
    let r = gql(
        &server,
        mine,
        USER_LIST,
        json!({"limit": 50, "offset": 0, "domain_name": "default", "order": "email"}),
    )
    .await;
    assert_eq!(
        emails(&r, "user_list"),
        [
            "boss@other.org",
            "o0@other.org",
            "o1@other.org",
            "o2@other.org"
        ]
    );
    let r = gql(
        &server,
        mine,
        "{ keypair_list(limit: 50, offset: 0) { items { user_id } total_count } }",
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["keypair_list"]["total_count"], 5, "{r}");
    // ... and cannot reach another domain's user directly either.
    let r = gql(
        &server,
        mine,
        "{ user(email: \"admin@lablup.com\") { email } }",
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["user"], Value::Null, "{r}");

    // A user may not list users, sees only its own keypairs, and the
    // superadmin-only lists refuse it.
    let r = gql(&server, USER, USER_LIST, json!({"limit": 5, "offset": 0})).await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Forbidden operation."),
        "{r}"
    );
    let r = gql(
        &server,
        USER,
        "{ keypair_list(limit: 50, offset: 0) { items { user_id access_key } total_count } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["keypair_list"],
        json!({"items": [{"user_id": "user@lablup.com", "access_key": USER_AK}], "total_count": 1})
    );
    for doc in ["{ domains { name } }", "{ scaling_groups { name } }"] {
        let r = gql(&server, USER, doc, json!({})).await;
        assert!(r["errors"].is_array(), "{doc}: {r}");
    }
    let r = gql(
        &server,
        USER,
        "{ groups { name } keypair { access_key is_admin } user { email role } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"],
        json!({"groups": [{"name": "default"}], "keypair": {"access_key": USER_AK, "is_admin": false},
               "user": {"email": "user@lablup.com", "role": "user"}}),
        "{r}"
    );
    let r = gql(
        &server,
        ADMIN,
        "{ domains { name scaling_groups } groups(domain_name: \"default\") { name domain_name } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"],
        json!({"domains": [{"name": "default", "scaling_groups": ["default"]}, {"name": "other", "scaling_groups": []}],
               "groups": [{"name": "default", "domain_name": "default"}]}),
        "{r}"
    );
}

#[tokio::test]
async fn mutations_answer_ok_msg_and_refuse_without_appending() {
    let db = TestDb::new().await;
    let server = start(&db).await;
    let head = log_head(&db).await;

    // Above the caller's role: ok false, the reference's message, no event.
    let r = gql(
        &server,
        USER,
        "mutation { create_domain(name: \"x\", props: {}) { ok msg domain { name } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["create_domain"],
        json!({"ok": false, "msg": "no permission to execute create_domain", "domain": null})
    );
    // Invariants: a duplicate, an unknown role, an unknown domain.
    let r = create_user(&server, ADMIN, "user@lablup.com", "default", "user").await;
    assert_eq!(r["data"]["create_user"]["ok"], false);
    assert!(
        r["data"]["create_user"]["msg"]
            .as_str()
            .unwrap()
            .starts_with("integrity error"),
        "{r}"
    );
    let r = create_user(&server, ADMIN, "new@example.com", "default", "overlord").await;
    assert!(
        r["data"]["create_user"]["msg"]
            .as_str()
            .unwrap()
            .contains("invalid role"),
        "{r}"
    );
    let r = create_user(&server, ADMIN, "new@example.com", "nowhere", "user").await;
    assert_eq!(r["data"]["create_user"]["ok"], false, "{r}");
    // A policy that keypairs use cannot be deleted.
    let r = gql(
        &server,
        ADMIN,
        "mutation { delete_keypair_resource_policy(name: \"default\") { ok msg } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["delete_keypair_resource_policy"]["ok"], false,
        "{r}"
    );
    // A project with members cannot be purged.
    let r = gql(
        &server,
        ADMIN,
        "{ groups(domain_name: \"default\") { id } }",
        json!({}),
    )
    .await;
    let gid = r["data"]["groups"][0]["id"].as_str().unwrap().to_owned();
    let r = gql(
        &server,
        ADMIN,
        "mutation($gid: UUID!) { purge_group(gid: $gid) { ok msg } }",
        json!({"gid": gid}),
    )
    .await;
    assert_eq!(r["data"]["purge_group"]["ok"], false, "{r}");
    assert_eq!(log_head(&db).await, head, "refusals append nothing");

    // The domain admin of `default` may manage projects there, not elsewhere.
    let r = create_user(&server, ADMIN, "dadmin@example.com", "default", "admin").await;
    assert_eq!(r["data"]["create_user"]["ok"], true, "{r}");
    let dadmin = keypair_for(&server, "dadmin@example.com", true).await;
    let dadmin = (dadmin.0.as_str(), dadmin.1.as_str());
    let r = gql(
        &server,
        dadmin,
        "mutation { create_group(name: \"team\", props: {domain_name: \"default\", description: \"d\"}) { ok msg group { name domain_name description } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["create_group"],
        json!({"ok": true, "msg": "success", "group": {"name": "team", "domain_name": "default", "description": "d"}})
    );
    gql(
        &server,
        ADMIN,
        "mutation { create_domain(name: \"elsewhere\", props: {}) { ok } }",
        json!({}),
    )
    .await;
    let r = gql(
        &server,
        dadmin,
        "mutation { create_group(name: \"team\", props: {domain_name: \"elsewhere\"}) { ok msg } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["create_group"],
        json!({"ok": false, "msg": "no permission to execute create_group"})
    );
    let r = gql(
        &server,
        dadmin,
        "mutation { create_user(email: \"z@example.com\", props: {username: \"z\", password: \"p\", need_password_change: false}) { ok msg } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["create_user"]["msg"],
        "no permission to execute create_user"
    );

    // Modify and delete, seen by the next query.
    let r = gql(
        &server,
        ADMIN,
        "mutation { modify_user(email: \"dadmin@example.com\", props: {full_name: \"Dee\", role: \"user\"}) { ok msg user { full_name role } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["modify_user"],
        json!({"ok": true, "msg": "success", "user": {"full_name": "Dee", "role": "user"}})
    );
    let r = gql(
        &server,
        ADMIN,
        "mutation { delete_user(email: \"dadmin@example.com\") { ok msg } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["delete_user"],
        json!({"ok": true, "msg": "success"})
    );
    let r = gql(
        &server,
        ADMIN,
        "{ user(email: \"dadmin@example.com\") { status is_active } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["user"],
        json!({"status": "deleted", "is_active": false})
    );
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retry_answer_as_the_first_request() {
    let db = TestDb::new().await;
    let server = start(&db).await;
    let vars = json!({"user_id": "user@lablup.com", "input": {"resource_policy": "default", "rate_limit": 500}});
    let first = gql_with(
        &server,
        ADMIN,
        CREATE_KEYPAIR,
        vars.clone(),
        &[("Idempotency-Key", "k-1")],
    )
    .await;
    let head = log_head(&db).await;
    let again = gql_with(
        &server,
        ADMIN,
        CREATE_KEYPAIR,
        vars.clone(),
        &[("Idempotency-Key", "k-1")],
    )
    .await;
    assert_eq!(first, again);
    assert_eq!(first["data"]["create_keypair"]["ok"], true, "{first}");
    assert_eq!(log_head(&db).await, head, "the retry appended nothing");
    // Another key, or another caller with the same key, is another request.
    let other = gql_with(
        &server,
        ADMIN,
        CREATE_KEYPAIR,
        vars,
        &[("Idempotency-Key", "k-2")],
    )
    .await;
    assert_ne!(
        other["data"]["create_keypair"]["keypair"]["access_key"],
        first["data"]["create_keypair"]["keypair"]["access_key"]
    );
    let r = gql(
        &server,
        ADMIN,
        "{ keypair_list(limit: 10, offset: 0, email: \"user@lablup.com\") { total_count } }",
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["keypair_list"]["total_count"], 3, "{r}");

    // A keyed purge retried after it succeeded still answers success, though
    // the purged user's e-mail no longer resolves.
    let purge = "mutation { purge_user(email: \"user@lablup.com\") { ok msg } }";
    let first = gql_with(
        &server,
        ADMIN,
        purge,
        json!({}),
        &[("Idempotency-Key", "p-1")],
    )
    .await;
    assert_eq!(
        first["data"]["purge_user"],
        json!({"ok": true, "msg": "success"}),
        "{first}"
    );
    let head = log_head(&db).await;
    let again = gql_with(
        &server,
        ADMIN,
        purge,
        json!({}),
        &[("Idempotency-Key", "p-1")],
    )
    .await;
    assert_eq!(again, first);
    assert_eq!(log_head(&db).await, head);
    let unkeyed = gql(&server, ADMIN, purge, json!({})).await;
    assert_eq!(unkeyed["data"]["purge_user"]["ok"], false, "{unkeyed}");
}

#[tokio::test]
async fn envelopes_of_both_endpoints_and_bad_requests() {
    let db = TestDb::new().await;
    let server = start(&db).await;
    let post = |path: &'static str, body: &'static str| {
        let server = &server;
        async move { signed_json(server, "POST", path, ADMIN, body.as_bytes(), &[]).await }
    };
    // Legacy endpoint: the bare data ...
    let r = post(
        "/admin/graphql",
        r#"{"query": "{ keypair { access_key } }"}"#,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"keypair": {"access_key": ADMIN_AK}})
    );
    // ... or 400 graphql-error with the errors as data.
    let r = post("/admin/graphql", r#"{"query": "{ nope }"}"#).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "https://api.backend.ai/probs/graphql-error");
    assert!(
        body["data"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "{body}"
    );
    // /admin/gql answers 200 with errors.
    let r = post("/admin/gql", r#"{"query": "{ nope }"}"#).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body["errors"][0]["message"].is_string(), "{body}");
    // Introspection is off by default.
    let r = post(
        "/admin/gql",
        r#"{"query": "{ __schema { types { name } } }"}"#,
    )
    .await;
    let body: Value = r.json().await.unwrap();
    assert!(
        body["errors"].is_array() && body.get("data").is_none_or(Value::is_null),
        "{body}"
    );
    // Malformed bodies are problems, not GraphQL errors.
    for bad in [
        r#"{"query": 1}"#,
        r#"{"query": "{ keypair { access_key } }", "extra": 1}"#,
        "not json",
        r#"{"query": "{}", "variables": [1]}"#,
    ] {
        let r = post("/admin/gql", bad).await;
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["type"], "https://api.backend.ai/probs/invalid-api-params",
            "{bad}"
        );
    }
    // Field order follows the selection (the CLI zips fields with values).
    let r = post(
        "/admin/gql",
        r#"{"query": "{ keypair { resource_policy access_key is_admin } }"}"#,
    )
    .await;
    let text = r.text().await.unwrap();
    let (a, b, c) = (
        text.find("resource_policy").unwrap(),
        text.find("access_key").unwrap(),
        text.find("is_admin").unwrap(),
    );
    assert!(a < b && b < c, "{text}");
}

#[tokio::test]
async fn presets_and_user_and_project_policies_through_graphql() {
    let db = TestDb::new().await;
    let server = start(&db).await;
    // The fixture's presets, visible to any caller.
    let r = gql(
        &server,
        USER,
        "{ resource_presets { name resource_slots shared_memory } }",
        json!({}),
    )
    .await;
    let names: Vec<&str> = r["data"]["resource_presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["01-small", "02-medium", "03-large"], "{r}");

    let r = gql(
        &server,
        ADMIN,
        "mutation { create_resource_preset(name: \"gpu-1\", props: {resource_slots: \"{\\\"cpu\\\": 4, \\\"mem\\\": \\\"8g\\\"}\", shared_memory: \"1g\"}) { ok msg resource_preset { name resource_slots shared_memory } } }",
        json!({}),
    )
    .await;
    let preset = &r["data"]["create_resource_preset"]["resource_preset"];
    assert_eq!(preset["name"], "gpu-1", "{r}");
    let slots: Value = serde_json::from_str(preset["resource_slots"].as_str().unwrap()).unwrap();
    assert_eq!(slots, json!({"cpu": "4", "mem": "8589934592"}));
    assert_eq!(preset["shared_memory"], 1_073_741_824);
    // Shared memory beyond memory is refused; users may not create presets.
    let r = gql(
        &server,
        ADMIN,
        "mutation { modify_resource_preset(name: \"gpu-1\", props: {shared_memory: \"16g\"}) { ok msg } }",
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["modify_resource_preset"]["ok"], false, "{r}");
    let r = gql(
        &server,
        USER,
        "mutation { delete_resource_preset(name: \"gpu-1\") { ok msg } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["delete_resource_preset"]["msg"],
        "no permission to execute delete_resource_preset"
    );

    // User and project resource policies: the caller's own, then changes.
    let r = gql(
        &server,
        USER,
        "{ user_resource_policy { name max_session_count_per_model_session } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["user_resource_policy"],
        json!({"name": "default", "max_session_count_per_model_session": 10})
    );
    let r = gql(
        &server,
        ADMIN,
        "mutation { create_project_resource_policy(name: \"small\", props: {max_network_count: 1}) { ok msg resource_policy { name max_network_count max_quota_scope_size } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"]["create_project_resource_policy"]["resource_policy"],
        json!({"name": "small", "max_network_count": 1, "max_quota_scope_size": -1})
    );
    let r = gql(
        &server,
        ADMIN,
        "mutation { modify_user_resource_policy(name: \"default\", props: {max_vfolder_count: 7}) { ok msg } delete_user_resource_policy(name: \"default\") { ok msg } }",
        json!({}),
    )
    .await;
    assert_eq!(r["data"]["modify_user_resource_policy"]["ok"], true, "{r}");
    assert_eq!(
        r["data"]["delete_user_resource_policy"]["ok"], false,
        "users use it: {r}"
    );
    let r = gql(
        &server,
        ADMIN,
        "{ user_resource_policies { name max_vfolder_count } project_resource_policies { name } }",
        json!({}),
    )
    .await;
    assert_eq!(
        r["data"],
        json!({"user_resource_policies": [{"name": "default", "max_vfolder_count": 7}],
               "project_resource_policies": [{"name": "default"}, {"name": "small"}]})
    );
}

#[tokio::test]
async fn a_deleted_keypair_stops_authenticating_within_the_cache_ttl() {
    let db = TestDb::new().await;
    let server = start(&db).await;
    let (ak, sk) = keypair_for(&server, "user@lablup.com", false).await;
    let probe = "{ keypair { access_key } }";
    let r = gql(&server, (&ak, &sk), probe, json!({})).await;
    assert_eq!(r["data"]["keypair"]["access_key"], ak.as_str(), "{r}");
    let r = gql(
        &server,
        ADMIN,
        "mutation($ak: String!) { delete_keypair(access_key: $ak) { ok msg } }",
        json!({"ak": ak}),
    )
    .await;
    assert_eq!(r["data"]["delete_keypair"]["ok"], true, "{r}");
    // The default cache keeps a looked-up keypair for 1 s.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let body = json!({"query": probe}).to_string();
    let r = signed_json(
        &server,
        "POST",
        "/admin/gql",
        (&ak, &sk),
        body.as_bytes(),
        &[],
    )
    .await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn concurrent_mutations_do_not_exhaust_a_small_pool() {
    // Each create_keypair reads its keypair back and opens its secret key,
    // which takes a connection of its own: a request holding one connection
    // while waiting for another would deadlock a small pool under load.
    let db = TestDb::new().await;
    let server = std::sync::Arc::new(
        common::start_with_fixture_env(&db, &[("MANAGER_DB__POOL_SIZE", "3")]).await,
    );
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let server = std::sync::Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            gql(
                &server,
                ADMIN,
                CREATE_KEYPAIR,
                json!({"user_id": "user@lablup.com", "input": {"resource_policy": "default", "rate_limit": 100}}),
            )
            .await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r["data"]["create_keypair"]["ok"], true, "{r}");
        assert!(
            r["data"]["create_keypair"]["keypair"]["secret_key"].is_string(),
            "{r}"
        );
    }
}

#[tokio::test]
async fn a_document_sent_again_answers_for_its_own_variables_operation_and_caller() {
    let db = TestDb::new().await;
    let server = start(&db).await;
    // Validated once, then kept: each request still gets its own answer.
    let doc = "query One($email: String) { user(email: $email) { email role } }
               query Two { keypair { access_key is_admin } }";
    let one = |email: &'static str| json!({"query": doc, "operationName": "One", "variables": {"email": email}});
    let gql_body = |body: Value| {
        let server = &server;
        async move {
            let r = signed_json(
                server,
                "POST",
                "/admin/gql",
                ADMIN,
                body.to_string().as_bytes(),
                &[],
            )
            .await;
            r.json::<Value>().await.unwrap()
        }
    };
    for _ in 0..2 {
        let admin = gql_body(one("admin@lablup.com")).await;
        assert_eq!(admin["data"]["user"]["role"], "superadmin", "{admin}");
        let user = gql_body(one("user@lablup.com")).await;
        assert_eq!(user["data"]["user"]["email"], "user@lablup.com", "{user}");
        let two = gql_body(json!({"query": doc, "operationName": "Two"})).await;
        assert_eq!(two["data"]["keypair"]["access_key"], ADMIN_AK, "{two}");
        // Without a name, a two-operation document is an error every time.
        let neither = gql_body(json!({"query": doc})).await;
        assert!(neither["errors"][0]["message"].is_string(), "{neither}");
        // Variables are checked on every request.
        let wrong =
            gql_body(json!({"query": doc, "operationName": "One", "variables": {"email": 5}}))
                .await;
        assert!(wrong["errors"][0]["message"].is_string(), "{wrong}");
    }
    // Another caller sending the same document sees only what it may.
    let mine = gql(
        &server,
        USER,
        "query Two { keypair { access_key is_admin } }",
        json!({}),
    )
    .await;
    assert_eq!(mine["data"]["keypair"]["access_key"], USER_AK, "{mine}");
    let theirs = gql(
        &server,
        USER,
        "query One($email: String) { user(email: $email) { email role } }",
        json!({"email": "admin@lablup.com"}),
    )
    .await;
    assert_ne!(theirs["data"]["user"]["role"], "superadmin", "{theirs}");
}

#[tokio::test]
async fn query_responses_are_kept_until_the_log_moves_and_only_for_their_caller() {
    use diesel_async::SimpleAsyncConnection;
    let db = TestDb::new().await;
    let server = start(&db).await;
    let body = json!({"query": "{ user_list(limit: 10, offset: 0, filter: \"email == \\\"user@lablup.com\\\"\") { items { email full_name } total_count } }"}).to_string();
    let send = |keypair: (&'static str, &'static str), body: String| {
        let server = &server;
        async move {
            let r = signed_json(server, "POST", "/admin/gql", keypair, body.as_bytes(), &[]).await;
            r.json::<Value>().await.unwrap()
        }
    };
    let kept = || {
        let metrics = server.metrics.clone();
        async move {
            let text = reqwest::get(format!("{metrics}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("graphql_cached_responses "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    let first = send(ADMIN, body.clone()).await;
    let name = first["data"]["user_list"]["items"][0]["full_name"].clone();
    // Kept once the projectors stand at the log's head.
    for _ in 0..100 {
        if kept().await >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        send(ADMIN, body.clone()).await;
    }
    assert!(kept().await >= 1.0, "nothing was kept");

    // Changed behind the log's back (no event): the kept answer still comes
    // back for the same body — and a fresh one for any other body or caller.
    db.connection()
        .await
        .batch_execute(
            "UPDATE users SET full_name = 'behind the back' WHERE email = 'user@lablup.com'",
        )
        .await
        .unwrap();
    let again = send(ADMIN, body.clone()).await;
    assert_eq!(
        again["data"]["user_list"]["items"][0]["full_name"], name,
        "{again}"
    );
    let spaced = send(ADMIN, format!("{body} ")).await;
    assert_eq!(
        spaced["data"]["user_list"]["items"][0]["full_name"], "behind the back",
        "{spaced}"
    );
    let theirs = send(USER, body.clone()).await;
    assert_ne!(theirs, first, "another caller got the admin's kept answer");

    // Any append retires what was kept.
    let made = gql(
        &server,
        ADMIN,
        "mutation { create_domain(name: \"moved\", props: {}) { ok msg } }",
        json!({}),
    )
    .await;
    assert_eq!(made["data"]["create_domain"]["ok"], true, "{made}");
    let after = send(ADMIN, body.clone()).await;
    assert_eq!(
        after["data"]["user_list"]["items"][0]["full_name"], "behind the back",
        "{after}"
    );
}

/// Holds every projector's checkpoint locked: projection rounds skip them, so
/// the read models stand still until the transaction ends.
async fn hold_projections(db: &TestDb) -> diesel_async::AsyncPgConnection {
    use diesel_async::SimpleAsyncConnection;
    let mut conn = db.connection().await;
    conn.batch_execute("BEGIN; SELECT * FROM projection_checkpoints FOR UPDATE;")
        .await
        .unwrap();
    conn
}

#[tokio::test]
async fn a_mutation_decides_on_the_log_without_waiting_for_the_read_models() {
    let db = TestDb::new().await;
    let server =
        common::start_with_fixture_env(&db, &[("MANAGER_API__READ_YOUR_WRITES_TIMEOUT_MS", "300")])
            .await;
    const KEYPAIR: &str = "query($ak: String!) { keypair(access_key: $ak) { access_key } }";
    let post = |query: &'static str, variables: Value| {
        let body = json!({"query": query, "variables": variables}).to_string();
        let server = &server;
        async move { signed_json(server, "POST", "/admin/gql", ADMIN, body.as_bytes(), &[]).await }
    };
    let stale = |r: &reqwest::Response| r.headers().get("x-backendai-stale-read").is_some();
    let new_keypair = json!({"user_id": "user@lablup.com", "input": {
        "is_active": true, "is_admin": false, "resource_policy": "default", "rate_limit": 1000}});

    // A first write, projected as usual.
    let first = post(CREATE_KEYPAIR, new_keypair.clone()).await;
    assert!(!stale(&first));
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["data"]["create_keypair"]["ok"], true, "{first}");

    let mut held = hold_projections(&db).await;
    // The caller's last write is now ahead of the read models. A mutation
    // is decided on the log: it neither waits for them nor answers stale,
    // and its payload is what the command made (the secret opens the key).
    let second = post(CREATE_KEYPAIR, new_keypair.clone()).await;
    assert!(!stale(&second), "a mutation waited for the read models");
    let second: Value = second.json().await.unwrap();
    let kp = &second["data"]["create_keypair"];
    assert_eq!(kp["ok"], true, "{second}");
    let ak = kp["keypair"]["access_key"].as_str().unwrap().to_owned();
    let sk = kp["keypair"]["secret_key"].as_str().unwrap().to_owned();
    assert_eq!(kp["keypair"]["user_id"], "user@lablup.com");

    // A query still waits for the caller's writes, and says it could not.
    let read = post(KEYPAIR, json!({"ak": ak})).await;
    assert!(stale(&read), "a stale read was not marked");
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["data"]["keypair"], Value::Null, "{read}");

    {
        use diesel_async::SimpleAsyncConnection;
        held.batch_execute("COMMIT").await.unwrap();
    }
    // Released, the runner takes the checkpoints again within its poll
    // interval (it stood by while they were held).
    let mut read = post(KEYPAIR, json!({"ak": ak})).await;
    for _ in 0..20 {
        if !stale(&read) {
            break;
        }
        read = post(KEYPAIR, json!({"ak": ak})).await;
    }
    assert!(!stale(&read));
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["data"]["keypair"]["access_key"], ak.as_str(), "{read}");
    // The secret the mutation answered is the one the manager keeps.
    let r = common::signed(&server, "GET", "/auth/role", &ak, &sk, None)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
