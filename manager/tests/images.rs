//! Images end to end: the default fixture registers the python image with
//! its aliases (idempotently), `backend.ai admin image list` (the official
//! client 23.9.10, `just client-venv`) and the GraphQL document it sends
//! list it, GraphQL `image(reference)` finds it, and the write side's
//! resolver finds it by alias and by canonical name.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{
    ADMIN_AK, ADMIN_SK, USER_AK, USER_SK, cli, gql, log_head, manager, start_with_fixture,
};
use manager_command::handler::CommandHandler;
use manager_command::image::resolve_image;
use manager_events::slots::SlotAmount;
use manager_events::testing::TestDb;
use serde_json::{Value, json};

const PYTHON: &str = "cr.backend.ai/stable/python:3.9-ubuntu20.04";

/// What `backend.ai admin image list` sends (API spec §5.6).
const IMAGE_LIST: &str = "query($is_operation: Boolean) {  images(is_operation: $is_operation) {    name registry architecture tag digest size_bytes aliases  }}";

const FULL: &str = "query($ref: String!, $arch: String) { image(reference: $ref, architecture: $arch) { \
    id name humanized_name tag registry architecture is_local digest hash size_bytes aliases \
    labels { key value } resource_limits { key min max } supported_accelerators installed \
    installed_agents } }";

fn images(v: &Value) -> &Vec<Value> {
    assert!(v.get("errors").is_none(), "{v}");
    v["data"]["images"].as_array().expect("a list of images")
}

#[tokio::test]
async fn the_fixture_registers_the_python_image_and_everyone_finds_it() {
    let db = TestDb::new().await;
    let server = start_with_fixture(&db).await;

    // Running the fixture again changes nothing.
    let head = log_head(&db).await;
    let out = manager(&db)
        .args(["fixture", "populate", "fixtures/default.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("created 0"), "{report}");
    assert_eq!(
        log_head(&db).await,
        head,
        "a second populate appends nothing"
    );

    // The document the CLI sends, as the superadmin and as a user of the
    // default domain (which allows cr.backend.ai).
    for keypair in [(ADMIN_AK, ADMIN_SK), (USER_AK, USER_SK)] {
        let v = gql(&server, keypair, IMAGE_LIST, json!({"is_operation": false})).await;
        assert_eq!(
            images(&v),
            &vec![json!({
                "name": "stable/python",
                "registry": "cr.backend.ai",
                "architecture": "x86_64",
                "tag": "3.9-ubuntu20.04",
                "digest": null,
                "size_bytes": 0,
                "aliases": ["python", "python:3.9-ubuntu20.04"],
            })],
            "{keypair:?}"
        );
    }
    // Operation images only: none.
    let v = gql(
        &server,
        (ADMIN_AK, ADMIN_SK),
        IMAGE_LIST,
        json!({"is_operation": true}),
    )
    .await;
    assert!(images(&v).is_empty());
    let v = gql(
        &server,
        (ADMIN_AK, ADMIN_SK),
        "{ images(is_installed: true) { name } }",
        json!({}),
    )
    .await;
    assert!(images(&v).is_empty(), "nothing is known to be installed");

    // One image by alias, short name or canonical name, with every field.
    for reference in ["python", "python:3.9-ubuntu20.04", PYTHON] {
        let v = gql(
            &server,
            (USER_AK, USER_SK),
            FULL,
            json!({"ref": reference, "arch": "x86_64"}),
        )
        .await;
        assert!(v.get("errors").is_none(), "{v}");
        let image = &v["data"]["image"];
        assert_eq!(image["name"], "stable/python", "{reference}: {v}");
        assert_eq!(image["humanized_name"], "stable/python");
        assert_eq!(image["installed"], false);
        assert_eq!(image["installed_agents"], json!([]));
        assert_eq!(
            image["resource_limits"],
            json!([
                {"key": "cpu", "min": "1", "max": "Infinity"},
                {"key": "mem", "min": "268435456", "max": "Infinity"},
            ])
        );
        assert_eq!(
            image["labels"],
            json!([
                {"key": "ai.backend.role", "value": "COMPUTE"},
                {"key": "ai.backend.runtime-path", "value": "python3"},
                {"key": "ai.backend.runtime-type", "value": "python"},
            ])
        );
    }
    for (reference, arch) in [
        ("python:3.10", "x86_64"),
        ("stable/python:3.9-ubuntu20.04", "x86_64"),
        ("python", "aarch64"),
    ] {
        let v = gql(
            &server,
            (USER_AK, USER_SK),
            FULL,
            json!({"ref": reference, "arch": arch}),
        )
        .await;
        assert_eq!(v["data"]["image"], Value::Null, "{reference}: {v}");
    }

    // The write side's resolver, as session creation uses it.
    let handler = CommandHandler::new(db.store().await);
    for reference in ["python", "python:3.9-ubuntu20.04", PYTHON] {
        let (id, image) = resolve_image(&handler, reference, "x86_64")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{reference} did not resolve"));
        assert_eq!(id, manager_events::image::stream_id(PYTHON, "x86_64"));
        assert_eq!(image.canonical, PYTHON);
        assert_eq!(image.labels()["ai.backend.runtime-path"], "python3");
        assert_eq!(image.min_of("cpu"), SlotAmount::from_int(1));
        assert_eq!(image.min_of("mem"), SlotAmount::from_int(268_435_456));
        assert_eq!(image.max_of("mem"), SlotAmount::Infinity);
    }
    for unknown in ["python:3.10", "cr.backend.ai/stable/python:3.10", "ruby"] {
        assert!(
            resolve_image(&handler, unknown, "x86_64")
                .await
                .unwrap()
                .is_none(),
            "{unknown} resolved"
        );
    }

    // The official CLI lists it with its aliases.
    let (ok, out) = cli(&server, ADMIN_AK, ADMIN_SK, &["admin", "image", "list"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.contains("stable/python"))
        .unwrap_or_else(|| panic!("no python image in {out}"));
    for part in [
        "cr.backend.ai",
        "x86_64",
        "3.9-ubuntu20.04",
        "[python, python:3.9-ubuntu20.04]",
    ] {
        assert!(row.contains(part), "{part} missing from {row:?}\n{out}");
    }

    // A domain that allows no registry sees no image; superadmins see all.
    let v = gql(
        &server,
        (ADMIN_AK, ADMIN_SK),
        "mutation { modify_domain(name: \"default\", props: {allowed_docker_registries: []}) { ok msg } }",
        json!({}),
    )
    .await;
    assert_eq!(v["data"]["modify_domain"]["ok"], true, "{v}");
    let v = gql(
        &server,
        (USER_AK, USER_SK),
        IMAGE_LIST,
        json!({"is_operation": false}),
    )
    .await;
    assert!(images(&v).is_empty(), "{v}");
    let v = gql(&server, (USER_AK, USER_SK), FULL, json!({"ref": "python"})).await;
    assert_eq!(v["data"]["image"], Value::Null, "{v}");
    let v = gql(
        &server,
        (ADMIN_AK, ADMIN_SK),
        IMAGE_LIST,
        json!({"is_operation": false}),
    )
    .await;
    assert_eq!(images(&v).len(), 1);
}
