//! Password hashing: Argon2id with a random salt, stored as a PHC string.
//!
//! Hashing happens before a command is decided (it is slow and random, and
//! aggregates are pure); only the hash ever reaches the log.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use manager_events::{Problem, ProblemKind};

/// Longest password accepted, in bytes (hashing cost grows with length).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Hashes a password for storage.
pub fn hash(password: &str) -> Result<String, Problem> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(Problem::new(ProblemKind::InvalidApiParams).msg(format!(
            "the password must be 1 to {MAX_PASSWORD_LEN} bytes long"
        )));
    }
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| {
        Problem::new(ProblemKind::InternalServerError).msg(format!("salting the password: {e}"))
    })?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| {
            Problem::new(ProblemKind::InternalServerError).msg(format!("hashing the password: {e}"))
        })
}

/// Whether `password` matches a stored hash. A malformed hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salted");
        assert!(verify("correct horse", &a) && verify("correct horse", &b));
        assert!(!verify("wrong", &a));
        assert!(!verify("correct horse", "not a hash"));
        assert!(hash("").is_err());
        assert!(hash(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
    }
}
