//! Every signed request recorded from the official client 23.9.10 (the CLI
//! run against a recording stub; see the API spec) verifies with our code.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use manager_command::auth::signature::{RequestParts, parse, parse_date, verify};

const SECRETS: &[(&str, &str)] = &[(
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
)];

#[test]
fn recorded_client_requests_verify() {
    let traces = include_str!("data/client-23.9.10-traces.jsonl");
    let mut verified = 0;
    for line in traces.lines() {
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        let h = &t["headers"];
        let Some(authorization) = h["Authorization"].as_str() else {
            continue;
        };
        let header = |n: &str| h[n].as_str();
        let date = header("Date").unwrap();
        let parts = RequestParts {
            method: t["method"].as_str().unwrap(),
            rel_url: t["raw_path"].as_str().unwrap(),
            host: header("Host").unwrap(),
            date: Some(date),
            authorization: Some(authorization),
            content_type: header("Content-Type"),
            api_version: header("X-BackendAI-Version"),
            legacy_api_version: None,
        };
        let now = parse_date(date).unwrap().to_utc();
        let credential = parse(&parts, now).unwrap().unwrap();
        let secret = SECRETS
            .iter()
            .find(|(ak, _)| *ak == credential.access_key)
            .expect("a known key")
            .1;
        verify(&parts, &credential, secret).unwrap_or_else(|e| panic!("{e}: {line}"));
        verified += 1;
    }
    assert_eq!(verified, 64, "every signed request in the recording");
}
