//! The authentication middleware: establishes the [`AuthContext`] of every
//! signed request, enforces the rate limit, and adds the `X-RateLimit-*`
//! headers to the answer.
//!
//! Unsigned requests pass through unauthenticated (handlers that need a caller
//! take an `AuthContext` and answer 400 for a missing/skewed date, else 401). The public paths — the
//! version probe, the announcement, the config probes — skip it entirely, as
//! the reference does, even when the client signs them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};
use chrono::Utc;
use diesel::sql_types::{BigInt, Bool, Text, Uuid as SqlUuid};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::RunQueryDsl;
use ipnet::IpNet;
use manager_events::auth::{AuthContext, UnsignedRequest};
use manager_events::port::ReadModelProgress;
use manager_events::secrets::KeyStore;
use manager_events::user::{UserRole, UserStatus};
use manager_events::{PgPool, Problem, ProblemKind};

use super::rate_limit::{RateDecision, RateLimiter};
use super::signature::{self, RequestParts};

/// Paths that never require (nor check) a signature.
pub const PUBLIC_PATHS: &[&str] = &[
    "",
    "/",
    "/manager/announcement",
    "/config/resource-slots",
    "/config/vfolder-types",
];

/// How long a looked-up keypair (and its opened secret) is reused by default.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);

/// At most this many keypairs are cached; beyond, the cache starts over.
const CACHE_CAPACITY: usize = 100_000;

/// Everything authentication needs.
pub struct Authenticator {
    pool: PgPool,
    keys: KeyStore,
    limiter: Option<RateLimiter>,
    cache: Mutex<HashMap<String, (Instant, Arc<Known>)>>,
    cache_ttl: Duration,
    read_models: Option<Arc<dyn ReadModelProgress>>,
}

/// A keypair as authentication needs it, with its secret opened.
struct Known {
    caller: Caller,
    secret: String,
}

#[derive(QueryableByName)]
struct Caller {
    #[diesel(sql_type = Text)]
    sealed_secret_key: String,
    #[diesel(sql_type = Bool)]
    is_active: bool,
    #[diesel(sql_type = Bool)]
    is_admin: bool,
    #[diesel(sql_type = BigInt)]
    rate_limit: i64,
    #[diesel(sql_type = SqlUuid)]
    user_uuid: uuid::Uuid,
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    domain_name: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    allowed_client_ip: Option<String>,
}

/// Whether `ip` is within the user's allowed addresses (`None`: anywhere).
/// Entries are addresses or CIDR networks; an entry that does not parse
/// allows nothing.
pub fn ip_allowed(allowed: &[String], ip: Option<IpAddr>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(ip) = ip else { return false };
    allowed.iter().any(|entry| match entry.parse::<IpNet>() {
        Ok(net) => net.contains(&ip),
        Err(_) => entry.parse::<IpAddr>().is_ok_and(|a| a == ip),
    })
}

fn auth_failed(msg: &str) -> Problem {
    Problem::new(ProblemKind::AuthFailed).msg(msg)
}

impl Authenticator {
    /// An authenticator reading the `keypairs` and `users` read models, opening
    /// secrets with `keys`, and rate limiting with `limiter` (none: unlimited).
    pub fn new(pool: PgPool, keys: KeyStore, limiter: Option<RateLimiter>) -> Self {
        Authenticator {
            pool,
            keys,
            limiter,
            cache: Mutex::new(HashMap::new()),
            cache_ttl: DEFAULT_CACHE_TTL,
            read_models: None,
        }
    }

    /// Lets an unknown access key wait (bounded) for the read models to
    /// catch up with the log before it is refused: a keypair works as soon as
    /// its creation is acknowledged, though mutations answer before the read
    /// models show what they did.
    pub fn with_read_models(mut self, read_models: Arc<dyn ReadModelProgress>) -> Self {
        self.read_models = Some(read_models);
        self
    }

    /// Reuses a looked-up keypair for `ttl` (0 looks it up on every
    /// request). A keypair deactivated or deleted — or a user suspended —
    /// stops authenticating at most this long after the read models show it.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The keypair of `access_key` with its secret opened, from the cache or
    /// the read models; `None` for an unknown or inactive keypair (never
    /// cached, so a new keypair works as soon as it is projected — and an
    /// unknown key waits for the read models to catch up, see
    /// [`Authenticator::with_read_models`]).
    async fn known(&self, access_key: &str) -> Result<Option<Arc<Known>>, Problem> {
        if !self.cache_ttl.is_zero()
            && let Ok(cache) = self.cache.lock()
            && let Some((at, known)) = cache.get(access_key)
            && at.elapsed() < self.cache_ttl
        {
            return Ok(Some(Arc::clone(known)));
        }
        let mut caller = self.lookup(access_key).await?;
        if caller.is_none()
            && let Some(read_models) = &self.read_models
            && read_models.catch_up().await
        {
            caller = self.lookup(access_key).await?;
        }
        let Some(caller) = caller.filter(|c| c.is_active) else {
            return Ok(None);
        };
        let Ok(secret) = self
            .keys
            .open_secret(access_key, &caller.sealed_secret_key)
            .await
        else {
            return Ok(None);
        };
        let known = Arc::new(Known { caller, secret });
        if !self.cache_ttl.is_zero()
            && let Ok(mut cache) = self.cache.lock()
        {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(access_key.to_owned(), (Instant::now(), Arc::clone(&known)));
        }
        Ok(Some(known))
    }

    /// The keypair of `access_key` and its user, from the read models.
    async fn lookup(&self, access_key: &str) -> Result<Option<Caller>, Problem> {
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| Problem::new(ProblemKind::ServiceUnavailable).msg(e.to_string()))?;
        manager_events::prepared(
            "SELECT k.sealed_secret_key, k.is_active, k.is_admin, k.rate_limit, u.uuid AS user_uuid, \
             u.email, u.role, u.status, u.domain_name, u.allowed_client_ip::text AS allowed_client_ip \
             FROM keypairs k JOIN users u ON u.uuid = k.user_uuid WHERE k.access_key = $1",
        )
        .bind::<Text, _>(access_key)
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(|e| Problem::new(ProblemKind::ServiceUnavailable).msg(e.to_string()))
    }

    /// Authenticates one request from `client_ip` (the peer address):
    /// `Ok(None)` when it is unsigned.
    pub async fn authenticate(
        &self,
        parts: &RequestParts<'_>,
        client_ip: Option<IpAddr>,
    ) -> Result<Option<(AuthContext, Option<RateDecision>)>, Problem> {
        let Some(credential) = signature::parse(parts, Utc::now())? else {
            return Ok(None);
        };
        let known = self
            .known(&credential.access_key)
            .await?
            .ok_or_else(|| auth_failed("Access key not found"))?;
        let (caller, secret) = (&known.caller, &known.secret);
        signature::verify(parts, &credential, secret)?;
        if UserStatus::parse(&caller.status) != Some(UserStatus::Active) {
            return Err(auth_failed("The user is not active"));
        }
        let allowed: Vec<String> = caller
            .allowed_client_ip
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        if !ip_allowed(&allowed, client_ip) {
            let shown = client_ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
            return Err(auth_failed(&format!("'{shown}' is not allowed IP address")));
        }
        let role = UserRole::parse(&caller.role)
            .ok_or_else(|| auth_failed("The user has an unknown role"))?;
        let rate = match &self.limiter {
            Some(limiter) => Some(
                limiter
                    .check(
                        &credential.access_key,
                        u64::try_from(caller.rate_limit).unwrap_or(0),
                    )
                    .await?,
            ),
            None => None,
        };
        let ctx = AuthContext {
            access_key: credential.access_key,
            is_admin: caller.is_admin,
            user_uuid: caller.user_uuid,
            email: caller.email.clone(),
            role,
            domain_name: caller.domain_name.clone(),
        };
        Ok(Some((ctx, rate)))
    }
}

fn header<'a>(req: &'a ServiceRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn add_rate_headers(res: &mut ServiceResponse<BoxBody>, rate: &RateDecision) {
    for (name, value) in rate.headers() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            res.headers_mut().insert(n, v);
        }
    }
}

/// The middleware; wrap an app with `actix_web::middleware::from_fn(authenticate)`
/// and give it `web::Data<Authenticator>`.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let auth = req
        .app_data::<web::Data<Authenticator>>()
        .map(|d| Arc::clone(&d.clone().into_inner()));
    let Some(auth) = auth.filter(|_| !PUBLIC_PATHS.contains(&req.path())) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let owned = |name: &str| header(&req, name).map(str::to_owned);
    let method = req.method().as_str().to_owned();
    let rel_url = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.path().to_owned(), |pq| pq.as_str().to_owned());
    let host = owned("host").unwrap_or_default();
    let date = owned("date")
        .or_else(|| owned("x-backendai-date"))
        .or_else(|| owned("x-sorna-date"));
    let authorization = owned("authorization");
    let content_type = owned("content-type");
    let api_version = owned("x-backendai-version");
    let legacy_api_version = owned("x-sorna-version");
    let parts = RequestParts {
        method: &method,
        rel_url: &rel_url,
        host: &host,
        date: date.as_deref(),
        authorization: authorization.as_deref(),
        content_type: content_type.as_deref(),
        api_version: api_version.as_deref(),
        legacy_api_version: legacy_api_version.as_deref(),
    };
    if parts.authorization.is_none() {
        // Unsigned: whether that is acceptable is the handler's business (and
        // an unknown path is a 404 before it is anything else).
        let date_ok = signature::parse(&parts, Utc::now()).is_ok();
        req.extensions_mut().insert(UnsignedRequest { date_ok });
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    // The peer address. X-Forwarded-For is not trusted: any client could
    // set it; behind a proxy, restrict access at the proxy.
    let client_ip = req.peer_addr().map(|a| a.ip());
    match auth.authenticate(&parts, client_ip).await {
        Err(problem) => Ok(req.into_response(problem.error_response())),
        Ok(None) => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body),
        Ok(Some((ctx, rate))) => {
            if let Some(rate) = rate.filter(|r| !r.allowed) {
                let mut res = req.into_response(rate.problem().error_response());
                add_rate_headers(&mut res, &rate);
                return Ok(res);
            }
            req.extensions_mut().insert(ctx);
            if let Some(position) = rate.and_then(|r| r.last_write) {
                req.extensions_mut()
                    .insert(manager_events::auth::LastWrite(position));
            }
            let mut res = next.call(req).await?.map_into_boxed_body();
            if let Some(rate) = rate {
                add_rate_headers(&mut res, &rate);
            }
            Ok(res)
        }
    }
}

/// API versions a client may ask for in `X-BackendAI-Version` (or the legacy
/// `X-Sorna-Version`); the manager speaks the last one and serves older
/// clients of the same line.
pub const KNOWN_API_VERSIONS: &[&str] = &[
    "v4.20181215",
    "v4.20190115",
    "v4.20190315",
    "v4.20190615",
    "v5.20191215",
    "v6.20200815",
    "v6.20210815",
    "v6.20220315",
    "v6.20220615",
    "v6.20230315",
    "v7.20230615",
];

/// Refuses a request that names an API version the manager does not know:
/// 400 `generic-bad-request` "Unsupported API version.", as the reference.
/// Requests without the header are served.
pub async fn check_api_version(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let asked = header(&req, "x-backendai-version").or_else(|| header(&req, "x-sorna-version"));
    if let Some(version) = asked
        && !KNOWN_API_VERSIONS.contains(&version)
    {
        let problem = Problem::new(ProblemKind::GenericBadRequest).msg("Unsupported API version.");
        return Ok(req.into_response(problem.error_response()));
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_rules() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(ip_allowed(&[], ip("203.0.113.9")));
        let rules = vec![
            "10.0.0.0/8".to_owned(),
            "192.168.1.7".to_owned(),
            "::1".to_owned(),
        ];
        assert!(ip_allowed(&rules, ip("10.20.30.40")));
        assert!(ip_allowed(&rules, ip("192.168.1.7")));
        assert!(ip_allowed(&rules, ip("::1")));
        assert!(!ip_allowed(&rules, ip("192.168.1.8")));
        assert!(!ip_allowed(&rules, None));
        assert!(!ip_allowed(&["garbage".to_owned()], ip("10.0.0.1")));
    }
}
