//! Who is calling: the identity the authentication middleware establishes and
//! every handler — command or query side — reads.

use uuid::Uuid;

use crate::user::UserRole;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthContext {
    /// The keypair that signed the request.
    pub access_key: String,
    /// The keypair's admin flag.
    pub is_admin: bool,
    /// The keypair's owner.
    pub user_uuid: Uuid,
    /// The owner's e-mail.
    pub email: String,
    /// The owner's global role.
    pub role: UserRole,
    /// The owner's domain.
    pub domain_name: String,
}

impl AuthContext {
    /// A superadmin acts across domains.
    pub fn is_superadmin(&self) -> bool {
        self.role == UserRole::Superadmin
    }

    /// An admin of its own domain (domain admins and superadmins).
    pub fn is_domain_admin(&self) -> bool {
        matches!(self.role, UserRole::Superadmin | UserRole::Admin)
    }
}

/// Left by the authentication middleware on a request that carried no
/// `Authorization` header, so that a handler requiring a caller can answer as
/// the reference does: 400 when the date was missing or skewed (the date is
/// checked first), 401 otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsignedRequest {
    /// Whether the request's date was present and within the window.
    pub date_ok: bool,
}

#[cfg(feature = "http")]
impl actix_web::FromRequest for AuthContext {
    type Error = crate::Problem;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    /// Handlers that take an `AuthContext` require authentication: without
    /// one the request is answered 401 "Unauthorized access" (or 400 when its
    /// date was missing or skewed), as the reference's `auth_required`.
    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage;
        let ext = req.extensions();
        let result = match (ext.get::<AuthContext>(), ext.get::<UnsignedRequest>()) {
            (Some(ctx), _) => Ok(ctx.clone()),
            (None, Some(UnsignedRequest { date_ok: false })) => {
                Err(crate::Problem::new(crate::ProblemKind::InvalidAuthParams)
                    .msg("Date/time sync error"))
            }
            _ => {
                Err(crate::Problem::new(crate::ProblemKind::AuthFailed).msg("Unauthorized access"))
            }
        };
        std::future::ready(result)
    }
}

/// The log position of the caller's last write, as the write side recorded
/// it; left on the request by the authentication middleware so that reads
/// can wait for the read models to show it (read-your-writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastWrite(pub u64);
