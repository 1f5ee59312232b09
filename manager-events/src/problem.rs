//! Errors as clients see them: Backend.AI's problem+json bodies.
//!
//! Every error the API returns — from the command side, the query side, or the
//! HTTP plumbing (unknown URL, wrong method) — is a [`Problem`]: an HTTP status,
//! a type URL `https://api.backend.ai/probs/<slug>`, a fixed title per type, and
//! optionally a `msg` and a `data` value. The official client prints the title
//! and msg, so titles follow the reference manager word for word (typos
//! included: "Serivce unavailable.").

use std::fmt;

use serde_json::{Map, Value};

/// The reference's error catalogue: each kind has one status, slug and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 400 `generic-bad-request`
    GenericBadRequest,
    /// 400 `invalid-api-params`: a body or query that fails validation.
    InvalidApiParams,
    /// 400 `invalid-auth-params`: a missing/skewed date or a malformed
    /// `Authorization` header.
    InvalidAuthParams,
    /// 400 `invalid-credentials`
    InvalidCredentials,
    /// 400 `graphql-error`: the legacy GraphQL endpoint's failures.
    GraphqlError,
    /// 400 `session-already-exists`: a live session has the name and the
    /// caller asked not to reuse it (or asked for another image).
    SessionAlreadyExists,
    /// 401 `auth-failed`: unknown key, bad signature, or not allowed.
    AuthFailed,
    /// 403 `generic-forbidden`
    GenericForbidden,
    /// 403 `insufficient-privilege`
    InsufficientPrivilege,
    /// 404 `url-not-found`
    UrlNotFound,
    /// 404 `object-not-found`; the argument names the object ("user",
    /// "domain", "user group (or project)", ...).
    ObjectNotFound(&'static str),
    /// 404 `too-many-sessions-matched`
    TooManySessionsMatched,
    /// 405 `method-not-allowed`
    MethodNotAllowed,
    /// 409 `conflict`: the resource changed concurrently; retry.
    Conflict,
    /// 412 `quota-exceeded`
    QuotaExceeded,
    /// 413 `payload-too-large`
    PayloadTooLarge,
    /// 429 `rate-limit-exceeded`
    RateLimitExceeded,
    /// 500 `internal-server-error`
    InternalServerError,
    /// 503 `service-unavailable`
    ServiceUnavailable,
}

impl ProblemKind {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        use ProblemKind::*;
        match self {
            GenericBadRequest | InvalidApiParams | InvalidAuthParams | InvalidCredentials
            | GraphqlError | SessionAlreadyExists => 400,
            AuthFailed => 401,
            GenericForbidden | InsufficientPrivilege => 403,
            UrlNotFound | ObjectNotFound(_) | TooManySessionsMatched => 404,
            MethodNotAllowed => 405,
            Conflict => 409,
            QuotaExceeded => 412,
            PayloadTooLarge => 413,
            RateLimitExceeded => 429,
            InternalServerError => 500,
            ServiceUnavailable => 503,
        }
    }

    /// The last segment of the type URL.
    pub fn slug(self) -> &'static str {
        use ProblemKind::*;
        match self {
            GenericBadRequest => "generic-bad-request",
            InvalidApiParams => "invalid-api-params",
            InvalidAuthParams => "invalid-auth-params",
            InvalidCredentials => "invalid-credentials",
            GraphqlError => "graphql-error",
            SessionAlreadyExists => "session-already-exists",
            TooManySessionsMatched => "too-many-sessions-matched",
            AuthFailed => "auth-failed",
            GenericForbidden => "generic-forbidden",
            InsufficientPrivilege => "insufficient-privilege",
            UrlNotFound => "url-not-found",
            ObjectNotFound(_) => "object-not-found",
            MethodNotAllowed => "method-not-allowed",
            Conflict => "conflict",
            QuotaExceeded => "quota-exceeded",
            PayloadTooLarge => "payload-too-large",
            RateLimitExceeded => "rate-limit-exceeded",
            InternalServerError => "internal-server-error",
            ServiceUnavailable => "service-unavailable",
        }
    }

    /// The fixed title.
    pub fn title(self) -> String {
        use ProblemKind::*;
        match self {
            GenericBadRequest => "Bad request.".into(),
            InvalidApiParams => "Missing or invalid API parameters.".into(),
            InvalidAuthParams => "Missing or invalid authorization parameters.".into(),
            InvalidCredentials => "Invalid credentials for authentication.".into(),
            GraphqlError => "GraphQL-generated error.".into(),
            SessionAlreadyExists => {
                "The session already exists but you requested not to reuse existing one.".into()
            }
            TooManySessionsMatched => "Too many sessions matched.".into(),
            AuthFailed => "Credential/signature mismatch.".into(),
            GenericForbidden => "Forbidden operation.".into(),
            InsufficientPrivilege => "Insufficient privilege.".into(),
            UrlNotFound => "Unknown URL path.".into(),
            ObjectNotFound(object) => format!("No such {object}."),
            MethodNotAllowed => "HTTP Method Not Allowed.".into(),
            Conflict => "The resource was modified concurrently; retry the request.".into(),
            QuotaExceeded => "You have reached your resource limit.".into(),
            PayloadTooLarge => "The request body is too large.".into(),
            RateLimitExceeded => "You have reached your API query rate limit.".into(),
            InternalServerError => "Internal server error.".into(),
            ServiceUnavailable => "Serivce unavailable.".into(),
        }
    }
}

/// One error response.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// What kind of error (status, slug, title).
    pub kind: ProblemKind,
    /// Extra human-readable detail.
    pub msg: Option<String>,
    /// Extra machine-readable detail (e.g. `{field: message}` for validation).
    pub data: Option<Value>,
}

impl Problem {
    /// A problem of this kind with no detail.
    pub fn new(kind: ProblemKind) -> Self {
        Problem {
            kind,
            msg: None,
            data: None,
        }
    }

    /// Adds a message.
    pub fn msg(mut self, msg: impl Into<String>) -> Self {
        self.msg = Some(msg.into());
        self
    }

    /// Adds data.
    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The problem+json body: `type` and `title` always, `msg` and `data` when set.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            Value::String(format!("https://api.backend.ai/probs/{}", self.kind.slug())),
        );
        body.insert("title".into(), Value::String(self.kind.title()));
        if let Some(msg) = &self.msg {
            body.insert("msg".into(), Value::String(msg.clone()));
        }
        if let Some(data) = &self.data {
            body.insert("data".into(), data.clone());
        }
        Value::Object(body)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.kind.title())?;
        if let Some(msg) = &self.msg {
            write!(f, " ({msg})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

impl From<ProblemKind> for Problem {
    fn from(kind: ProblemKind) -> Self {
        Problem::new(kind)
    }
}

#[cfg(feature = "http")]
impl actix_web::ResponseError for Problem {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::from_u16(self.status())
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        actix_web::HttpResponse::build(self.status_code())
            .content_type("application/problem+json")
            .body(self.body().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_match_the_reference() {
        let p = Problem::new(ProblemKind::UrlNotFound).data(json!("/nope"));
        assert_eq!(p.status(), 404);
        assert_eq!(
            p.body(),
            json!({"type": "https://api.backend.ai/probs/url-not-found", "title": "Unknown URL path.", "data": "/nope"})
        );
        let p = Problem::new(ProblemKind::AuthFailed).msg("Signature mismatch");
        assert_eq!(
            p.body(),
            json!({"type": "https://api.backend.ai/probs/auth-failed", "title": "Credential/signature mismatch.", "msg": "Signature mismatch"})
        );
        assert_eq!(
            ProblemKind::ObjectNotFound("domain").title(),
            "No such domain."
        );
    }
}
