//! Backend.AI request signing (API spec §2), verified the way the reference
//! manager verifies it.
//!
//! A signed request carries `Authorization: BackendAI signMethod=HMAC-SHA256,
//! credential=<access key>:<hex signature>`. The signature is
//! `HMAC(k2, string_to_sign)` where `k1 = HMAC(secret, YYYYMMDD of the Date
//! header)` and `k2 = HMAC(k1, Host header)`, and the string to sign is seven
//! lines: method, raw path and query, the raw Date header, `host:<Host>`,
//! `content-type:<MIME type>`, `x-backendai-version:<version>`, and the
//! SHA-256 of the empty body (clients since v4.20181215 never hash the real
//! body).
//!
//! Verification runs in the reference's order, because clients can see it:
//! 1. the date (before anything else — an unsigned request without a Date gets
//!    400, not 401) must lie strictly within 15 minutes of now;
//! 2. the `Authorization` header is parsed (absent: the request continues
//!    unauthenticated);
//! 3. the caller looks up the access key's secret (absent: 401);
//! 4. the signature is recomputed and compared in constant time (mismatch: 401).

use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use manager_events::{Problem, ProblemKind};
use sha2::{Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;

/// How far a request's date may be from the server's clock, either way.
pub const MAX_SKEW: Duration = Duration::minutes(15);

/// Hex SHA-256 of the empty body: the last line of every string to sign.
pub const EMPTY_BODY_HASH: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The parts of an HTTP request that signing looks at, as received.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The raw path and query exactly as received (no decoding), e.g.
    /// `/session/s1?owner_access_key=AK`.
    pub rel_url: &'a str,
    /// `Host` header.
    pub host: &'a str,
    /// `Date`, else `X-BackendAI-Date`, else `X-Sorna-Date`.
    pub date: Option<&'a str>,
    /// `Authorization` header.
    pub authorization: Option<&'a str>,
    /// `Content-Type` header, raw (parameters are dropped here).
    pub content_type: Option<&'a str>,
    /// `X-BackendAI-Version` header.
    pub api_version: Option<&'a str>,
    /// `X-Sorna-Version` header (legacy; used only when the other is absent).
    pub legacy_api_version: Option<&'a str>,
}

/// The credential part of a parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The access key that signed.
    pub access_key: String,
    /// The signature, as sent (hex).
    pub signature: String,
    /// The hash of `signMethod` (`sha256`, ...), lowercased.
    pub hash: String,
    /// The request date, parsed.
    pub date: DateTime<FixedOffset>,
}

/// Why a request failed authentication; each maps to the reference's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No usable date, or one outside the 15-minute window.
    #[error("Date/time sync error")]
    DateSync,
    /// The header is not `<scheme> <params>`.
    #[error("Malformed authorization header")]
    MalformedHeader,
    /// The scheme is not `BackendAI` (or the legacy `Sorna`).
    #[error("Invalid authorization type name")]
    InvalidTypeName,
    /// `signMethod` or `credential` missing or malformed.
    #[error("Missing or malformed authorization parameters")]
    MissingParameters,
    /// A sign method other than HMAC with a SHA-2 hash.
    #[error("Unsupported authorization method")]
    UnsupportedMethod,
    /// No `X-BackendAI-Version` header on a signed request.
    #[error("API version missing in request headers")]
    ApiVersionMissing,
    /// The recomputed signature differs.
    #[error("Signature mismatch")]
    SignatureMismatch,
}

impl From<SignatureError> for Problem {
    fn from(err: SignatureError) -> Problem {
        let kind = match err {
            SignatureError::SignatureMismatch => ProblemKind::AuthFailed,
            _ => ProblemKind::InvalidAuthParams,
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// Steps 1 and 2: checks the date window, then parses the `Authorization`
/// header. `Ok(None)` means an unsigned request (it continues unauthenticated).
pub fn parse(
    req: &RequestParts<'_>,
    now: DateTime<Utc>,
) -> Result<Option<Credential>, SignatureError> {
    let date = req
        .date
        .and_then(parse_date)
        .ok_or(SignatureError::DateSync)?;
    let skew = date.with_timezone(&Utc) - now;
    if !(skew > -MAX_SKEW && skew < MAX_SKEW) {
        return Err(SignatureError::DateSync);
    }
    let Some(header) = req.authorization else {
        return Ok(None);
    };
    let (scheme, rest) = header
        .split_once(' ')
        .ok_or(SignatureError::MalformedHeader)?;
    if scheme != "BackendAI" && scheme != "Sorna" {
        return Err(SignatureError::InvalidTypeName);
    }
    let mut sign_method = None;
    let mut credential = None;
    for piece in rest.split(',') {
        let (key, value) = piece
            .trim()
            .split_once('=')
            .ok_or(SignatureError::MissingParameters)?;
        match key {
            "signMethod" => sign_method = Some(value),
            "credential" => credential = Some(value),
            _ => {}
        }
    }
    let (sign_method, credential) = sign_method
        .zip(credential)
        .ok_or(SignatureError::MissingParameters)?;
    let (access_key, signature) = credential
        .split_once(':')
        .ok_or(SignatureError::MissingParameters)?;
    let sign_method = sign_method.to_ascii_lowercase();
    let (mac, hash) = sign_method
        .split_once('-')
        .ok_or(SignatureError::MissingParameters)?;
    if mac != "hmac" || !matches!(hash, "sha256" | "sha384" | "sha512") {
        return Err(SignatureError::UnsupportedMethod);
    }
    Ok(Some(Credential {
        access_key: access_key.to_owned(),
        signature: signature.to_owned(),
        hash: hash.to_owned(),
        date,
    }))
}

/// Step 4: recomputes the signature with the keypair's secret and compares it
/// in constant time.
pub fn verify(
    req: &RequestParts<'_>,
    credential: &Credential,
    secret_key: &str,
) -> Result<(), SignatureError> {
    let expected = sign(req, &credential.hash, credential.date, secret_key)?;
    if expected
        .as_bytes()
        .ct_eq(credential.signature.as_bytes())
        .into()
    {
        Ok(())
    } else {
        Err(SignatureError::SignatureMismatch)
    }
}

/// The hex signature of a request, as a client computes it.
pub fn sign(
    req: &RequestParts<'_>,
    hash: &str,
    date: DateTime<FixedOffset>,
    secret_key: &str,
) -> Result<String, SignatureError> {
    let to_sign = string_to_sign(req)?;
    let key_date = date.format("%Y%m%d").to_string();
    Ok(match hash {
        "sha256" => hex::encode(derive::<Hmac<Sha256>>(
            secret_key, &key_date, req.host, &to_sign,
        )),
        "sha384" => hex::encode(derive::<Hmac<Sha384>>(
            secret_key, &key_date, req.host, &to_sign,
        )),
        "sha512" => hex::encode(derive::<Hmac<Sha512>>(
            secret_key, &key_date, req.host, &to_sign,
        )),
        _ => return Err(SignatureError::UnsupportedMethod),
    })
}

fn derive<M: Mac + hmac::digest::KeyInit>(
    secret: &str,
    key_date: &str,
    host: &str,
    msg: &str,
) -> Vec<u8> {
    let mac = |key: &[u8], data: &[u8]| {
        // HMAC accepts keys of any length, so this never fails.
        let mut m =
            <M as hmac::digest::KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        m.update(data);
        m.finalize().into_bytes().to_vec()
    };
    let k1 = mac(secret.as_bytes(), key_date.as_bytes());
    let k2 = mac(&k1, host.as_bytes());
    mac(&k2, msg.as_bytes())
}

/// The seven-line string a request's signature covers.
pub fn string_to_sign(req: &RequestParts<'_>) -> Result<String, SignatureError> {
    let (version_line, version) = match (req.api_version, req.legacy_api_version) {
        (Some(v), _) => ("x-backendai-version", v),
        (None, Some(v)) => ("x-sorna-version", v),
        (None, None) => return Err(SignatureError::ApiVersionMissing),
    };
    let content_type = req
        .content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|ct| !ct.is_empty())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    Ok(format!(
        "{}\n{}\n{}\nhost:{}\ncontent-type:{}\n{}:{}\n{}",
        req.method,
        req.rel_url,
        req.date.unwrap_or(""),
        req.host,
        content_type,
        version_line,
        version,
        EMPTY_BODY_HASH,
    ))
}

/// Parses a request date leniently, as the reference does: RFC 3339 / ISO 8601
/// (with `T` or a space; without an offset it is UTC) or an RFC 1123 HTTP date.
pub fn parse_date(s: &str) -> Option<DateTime<FixedOffset>> {
    let s = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d);
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(s) {
        return Some(d);
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
            return Some(naive.and_utc().fixed_offset());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const AK: &str = "AKIAIOSFODNN7EXAMPLE";
    const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn example_a(authorization: Option<&'static str>) -> RequestParts<'static> {
        RequestParts {
            method: "GET",
            rel_url: "/session/mysess?owner_access_key=AKIAEXAMPLE",
            host: "127.0.0.1:8081",
            date: Some("2024-01-15T12:30:45.123456+00:00"),
            authorization,
            content_type: Some("text/plain"),
            api_version: Some("v7.20230615"),
            legacy_api_version: None,
        }
    }

    const SIG_A: &str = "3ef1a57962e53f393e6f0956825f3a2d9829cebdeaa4030e2a35314bc397a685";
    const AUTH_A: &str = "BackendAI signMethod=HMAC-SHA256, credential=AKIAIOSFODNN7EXAMPLE:3ef1a57962e53f393e6f0956825f3a2d9829cebdeaa4030e2a35314bc397a685";

    fn at(s: &str) -> DateTime<Utc> {
        parse_date(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn worked_example_a() {
        let req = example_a(Some(AUTH_A));
        assert_eq!(
            string_to_sign(&req).unwrap(),
            "GET\n/session/mysess?owner_access_key=AKIAEXAMPLE\n2024-01-15T12:30:45.123456+00:00\n\
             host:127.0.0.1:8081\ncontent-type:text/plain\nx-backendai-version:v7.20230615\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let k1 = derive_k(SK, "20240115", None);
        assert_eq!(
            hex::encode(&k1),
            "eb76fa1e437efa48d3217861ae87eea86c0dc3cdd258f1b6c4aa05765f7f54f7"
        );
        assert_eq!(
            hex::encode(derive_k(SK, "20240115", Some("127.0.0.1:8081"))),
            "2a0cff58859b4d24f9e1a10da6f67c046e8f85b6b20e05af18efa51de2ba5bf0"
        );
        let cred = parse(&req, at("2024-01-15T12:31:00Z")).unwrap().unwrap();
        assert_eq!(cred.access_key, AK);
        assert_eq!(cred.signature, SIG_A);
        verify(&req, &cred, SK).unwrap();
    }

    #[test]
    fn worked_example_b() {
        let req = RequestParts {
            method: "POST",
            rel_url: "/admin/gql",
            host: "api.example.com",
            date: Some("2024-01-15T12:30:45+00:00"),
            authorization: None,
            content_type: Some("application/json; charset=utf-8"),
            api_version: Some("v7.20230615"),
            legacy_api_version: None,
        };
        assert_eq!(
            hex::encode(derive_k(SK, "20240115", Some("api.example.com"))),
            "48b8615ff1d349ce5c2b51cb5820a5799d1888467520c17605b8cfe81f1c70c0"
        );
        let date = parse_date("2024-01-15T12:30:45+00:00").unwrap();
        assert_eq!(
            sign(&req, "sha256", date, SK).unwrap(),
            "2215c58143498a6b13cb01d8d1d3686e6b557f73aef3d4c186888a9fd9731e48"
        );
    }

    /// k1 (host `None`) or k2 of the spec's examples.
    fn derive_k(secret: &str, day: &str, host: Option<&str>) -> Vec<u8> {
        let mac = |key: &[u8], data: &[u8]| {
            let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        };
        let k1 = mac(secret.as_bytes(), day.as_bytes());
        match host {
            None => k1,
            Some(h) => mac(&k1, h.as_bytes()),
        }
    }

    #[test]
    fn the_date_window_is_checked_first_and_strictly() {
        let now = at("2024-01-15T12:30:45.123456Z");
        // No Date and no Authorization: 400 date error, not "unauthenticated".
        let mut req = example_a(None);
        req.date = None;
        assert_eq!(parse(&req, now), Err(SignatureError::DateSync));
        req.date = Some("yesterday");
        assert_eq!(parse(&req, now), Err(SignatureError::DateSync));
        let req = example_a(Some("garbage"));
        assert_eq!(
            parse(&req, now + Duration::minutes(15)),
            Err(SignatureError::DateSync)
        );
        assert_eq!(
            parse(&req, now - Duration::minutes(15)),
            Err(SignatureError::DateSync)
        );
        assert_eq!(
            parse(&req, now + Duration::minutes(14)),
            Err(SignatureError::MalformedHeader)
        );
        assert_eq!(parse(&example_a(None), now), Ok(None));
    }

    #[test]
    fn dates_are_parsed_leniently() {
        for s in [
            "2024-01-15T12:30:45+00:00",
            "2024-01-15T12:30:45.5+00:00",
            "2024-01-15 12:30:45+00:00",
            "2024-01-15T12:30:45",
            "Mon, 15 Jan 2024 12:30:45 GMT",
            "2024-01-15T21:30:45+09:00",
        ] {
            let d = parse_date(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(
                d.with_timezone(&Utc).format("%H:%M").to_string(),
                "12:30",
                "{s}"
            );
        }
        // The key date is the day in the header's own offset.
        let d = parse_date("2024-01-16T01:00:00+09:00").unwrap();
        assert_eq!(d.format("%Y%m%d").to_string(), "20240116");
    }

    #[test]
    fn each_malformation_has_its_own_error() {
        let now = at("2024-01-15T12:31:00Z");
        let cases = [
            ("BackendAI", SignatureError::MalformedHeader),
            (
                "Bearer signMethod=HMAC-SHA256, credential=A:b",
                SignatureError::InvalidTypeName,
            ),
            (
                "BackendAI credential=A:b",
                SignatureError::MissingParameters,
            ),
            (
                "BackendAI signMethod=HMAC-SHA256",
                SignatureError::MissingParameters,
            ),
            (
                "BackendAI signMethod=HMAC-SHA256, credential=Ab",
                SignatureError::MissingParameters,
            ),
            (
                "BackendAI signMethod=HMAC-SHA256, credential",
                SignatureError::MissingParameters,
            ),
            (
                "BackendAI signMethod=HMAC-MD5, credential=A:b",
                SignatureError::UnsupportedMethod,
            ),
            (
                "BackendAI signMethod=RSA-SHA256, credential=A:b",
                SignatureError::UnsupportedMethod,
            ),
        ];
        for (header, expected) in cases {
            let mut req = example_a(None);
            req.authorization = Some(header);
            assert_eq!(parse(&req, now), Err(expected), "{header}");
        }
        // The legacy scheme name is accepted.
        let mut req = example_a(None);
        req.authorization = Some("Sorna signMethod=HMAC-SHA256, credential=AK:sig");
        assert_eq!(parse(&req, now).unwrap().unwrap().access_key, "AK");
    }

    #[test]
    fn a_wrong_secret_or_any_altered_part_is_a_mismatch() {
        let now = at("2024-01-15T12:31:00Z");
        let req = example_a(Some(AUTH_A));
        let cred = parse(&req, now).unwrap().unwrap();
        assert_eq!(
            verify(&req, &cred, "not-the-secret"),
            Err(SignatureError::SignatureMismatch)
        );
        let mut altered = req;
        altered.rel_url = "/session/mysess?owner_access_key=SOMEONE_ELSE";
        assert_eq!(
            verify(&altered, &cred, SK),
            Err(SignatureError::SignatureMismatch)
        );
        let mut altered = req;
        altered.host = "127.0.0.1:80";
        assert_eq!(
            verify(&altered, &cred, SK),
            Err(SignatureError::SignatureMismatch)
        );
        let mut altered = req;
        altered.method = "DELETE";
        assert_eq!(
            verify(&altered, &cred, SK),
            Err(SignatureError::SignatureMismatch)
        );
        let mut no_version = req;
        no_version.api_version = None;
        assert_eq!(
            verify(&no_version, &cred, SK),
            Err(SignatureError::ApiVersionMissing)
        );
        // Upper-case hex is not what the client sends: it does not match.
        let mut upper = cred.clone();
        upper.signature = SIG_A.to_uppercase();
        assert_eq!(
            verify(&req, &upper, SK),
            Err(SignatureError::SignatureMismatch)
        );
    }

    #[test]
    fn errors_map_to_the_reference_problems() {
        let p: Problem = SignatureError::DateSync.into();
        assert_eq!(
            (p.status(), p.msg.as_deref()),
            (400, Some("Date/time sync error"))
        );
        let p: Problem = SignatureError::SignatureMismatch.into();
        assert_eq!((p.status(), p.kind.slug()), (401, "auth-failed"));
    }
}
