//! Secrets that must be recoverable (keypair secret keys, which the manager
//! needs to verify request signatures) without ever being in clear text in the
//! event log, which is kept forever. See `docs/decisions/002-secrets.md`.
//!
//! Envelope encryption with XChaCha20-Poly1305:
//! - the **cluster key** (configuration, 32 bytes) wraps
//! - a random **data key** per keypair (table `keypair_data_keys`, mutable),
//!   which seals
//! - the secret (in the keypair's events, immutable).
//!
//! Every ciphertext is bound to its access key (associated data), so a sealed
//! secret or a wrapped key copied to another keypair does not open. Deleting a
//! data key shreds one keypair's secret; losing the cluster key shreds all.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

/// The cluster key used when the configuration sets none. Fine for a laptop,
/// never for a real cluster: `start-server` warns loudly when it is in use.
pub const DEVELOPMENT_CLUSTER_KEY: &str = "ZGV2ZWxvcG1lbnQta2V5LWRvLW5vdC11c2UtcHJvZCE=";

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The configured cluster key is not 32 bytes of base64.
    #[error("the cluster key must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)")]
    BadClusterKey,
    /// Authentication failed: wrong key, wrong access key, or altered bytes.
    #[error("the secret could not be opened (wrong key, or the data was altered)")]
    Unreadable,
    /// The keypair's data key is gone (the keypair was deleted).
    #[error("the keypair's data key no longer exists")]
    Shredded,
}

/// The key-encryption key from the configuration.
#[derive(Clone)]
pub struct ClusterKey {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ClusterKey {
    /// Reads a base64-encoded 32-byte key.
    pub fn from_base64(encoded: &str) -> Result<Self, SecretError> {
        let bytes = B64
            .decode(encoded.trim())
            .map_err(|_| SecretError::BadClusterKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadClusterKey)?;
        let id = hex::encode(&Sha256::digest(key)[..8]);
        Ok(ClusterKey {
            cipher: XChaCha20Poly1305::new(&key.into()),
            id,
        })
    }

    /// A short public identifier of the key (a hash prefix), recorded next to
    /// what it wrapped, so that a rotation knows what to re-wrap.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this is the built-in development key.
    pub fn is_development(&self) -> bool {
        ClusterKey::from_base64(DEVELOPMENT_CLUSTER_KEY).is_ok_and(|k| k.id == self.id)
    }
}

/// One keypair's data key.
#[derive(Clone)]
pub struct DataKey {
    cipher: XChaCha20Poly1305,
}

fn seal_with(cipher: &XChaCha20Poly1305, plaintext: &[u8], aad: &str) -> Vec<u8> {
    let nonce_bytes: [u8; 24] = rand::random();
    let nonce = XNonce::from(nonce_bytes);
    // Encryption with a valid key and nonce cannot fail.
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: aad.as_bytes(),
            },
        )
        .unwrap_or_default();
    let mut out = nonce_bytes.to_vec();
    out.extend(ct);
    out
}

fn open_with(cipher: &XChaCha20Poly1305, sealed: &[u8], aad: &str) -> Result<Vec<u8>, SecretError> {
    if sealed.len() < 24 {
        return Err(SecretError::Unreadable);
    }
    let (nonce, ct) = sealed.split_at(24);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| SecretError::Unreadable)
}

impl DataKey {
    /// A fresh random data key, and its wrapped form for storage.
    pub fn generate(cluster: &ClusterKey, access_key: &str) -> (DataKey, Vec<u8>) {
        let key: [u8; 32] = rand::random();
        let wrapped = seal_with(&cluster.cipher, &key, access_key);
        (
            DataKey {
                cipher: XChaCha20Poly1305::new(&key.into()),
            },
            wrapped,
        )
    }

    /// Unwraps a stored data key.
    pub fn unwrap(
        cluster: &ClusterKey,
        access_key: &str,
        wrapped: &[u8],
    ) -> Result<DataKey, SecretError> {
        let key = open_with(&cluster.cipher, wrapped, access_key)?;
        let key: [u8; 32] = key.try_into().map_err(|_| SecretError::Unreadable)?;
        Ok(DataKey {
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    /// Seals a secret for the log (base64 text).
    pub fn seal(&self, access_key: &str, secret: &str) -> String {
        B64.encode(seal_with(&self.cipher, secret.as_bytes(), access_key))
    }

    /// Opens a sealed secret.
    pub fn open(&self, access_key: &str, sealed: &str) -> Result<String, SecretError> {
        let bytes = B64.decode(sealed).map_err(|_| SecretError::Unreadable)?;
        String::from_utf8(open_with(&self.cipher, &bytes, access_key)?)
            .map_err(|_| SecretError::Unreadable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterKey {
        ClusterKey::from_base64(DEVELOPMENT_CLUSTER_KEY).unwrap()
    }

    #[test]
    fn seal_and_open_round_trip_only_with_the_right_keys() {
        let c = cluster();
        assert!(c.is_development());
        let (dek, wrapped) = DataKey::generate(&c, "AKIA1");
        let sealed = dek.seal("AKIA1", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        assert!(!sealed.contains("wJalr"));
        let again = DataKey::unwrap(&c, "AKIA1", &wrapped).unwrap();
        assert_eq!(
            again.open("AKIA1", &sealed).unwrap(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        );
        // Bound to the access key, the cluster key and the bytes.
        assert_eq!(again.open("AKIA2", &sealed), Err(SecretError::Unreadable));
        assert!(DataKey::unwrap(&c, "AKIA2", &wrapped).is_err());
        let other = ClusterKey::from_base64(&B64.encode([7u8; 32])).unwrap();
        assert!(!other.is_development());
        assert!(DataKey::unwrap(&other, "AKIA1", &wrapped).is_err());
        let mut tampered = B64.decode(&sealed).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            again.open("AKIA1", &B64.encode(tampered)),
            Err(SecretError::Unreadable)
        );
        // Fresh nonces: sealing twice gives different ciphertexts.
        assert_ne!(dek.seal("AKIA1", "s"), dek.seal("AKIA1", "s"));
    }

    #[test]
    fn cluster_keys_must_be_32_bytes() {
        assert_eq!(
            ClusterKey::from_base64("short").unwrap_err(),
            SecretError::BadClusterKey
        );
        assert_eq!(
            ClusterKey::from_base64(&B64.encode([1u8; 16])).unwrap_err(),
            SecretError::BadClusterKey
        );
    }
}

/// Why the key store failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// Sealing or opening failed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    /// No connection could be had.
    #[error("database pool: {0}")]
    Pool(String),
}

/// How long an unwrapped data key is kept in memory. Shredding removes it
/// at once from this process; other processes may still open the keypair's
/// secret for up to this long.
pub const DATA_KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Unwrapped data keys kept in memory at most.
const DATA_KEY_CACHE_ENTRIES: usize = 10_000;

/// The table of wrapped data keys (`keypair_data_keys`), with the keys
/// unwrapped recently kept for [`DATA_KEY_CACHE_TTL`] (a keypair created is
/// read back at once; a signed request opens its secret).
#[derive(Clone)]
pub struct KeyStore {
    pool: crate::store::PgPool,
    cluster: ClusterKey,
    recent: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, (DataKey, std::time::Instant)>>,
    >,
}

#[derive(diesel::QueryableByName)]
struct WrappedRow {
    #[diesel(sql_type = diesel::sql_types::Binary)]
    wrapped_key: Vec<u8>,
}

impl KeyStore {
    /// A key store over the pool, wrapping with `cluster`.
    pub fn new(pool: crate::store::PgPool, cluster: ClusterKey) -> Self {
        KeyStore {
            pool,
            cluster,
            recent: std::sync::Arc::default(),
        }
    }

    fn remembered(&self, access_key: &str) -> Option<DataKey> {
        let recent = self.recent.lock().ok()?;
        let (key, at) = recent.get(access_key)?;
        (at.elapsed() < DATA_KEY_CACHE_TTL).then(|| key.clone())
    }

    fn remember(&self, access_key: &str, key: &DataKey) {
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        if recent.len() >= DATA_KEY_CACHE_ENTRIES {
            recent.retain(|_, (_, at)| at.elapsed() < DATA_KEY_CACHE_TTL);
            if recent.len() >= DATA_KEY_CACHE_ENTRIES {
                recent.clear();
            }
        }
        recent.insert(
            access_key.to_owned(),
            (key.clone(), std::time::Instant::now()),
        );
    }

    fn forget(&self, access_key: &str) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.remove(access_key);
        }
    }

    /// The cluster key.
    pub fn cluster_key(&self) -> &ClusterKey {
        &self.cluster
    }

    async fn conn(
        &self,
    ) -> Result<
        diesel_async::pooled_connection::deadpool::Object<diesel_async::AsyncPgConnection>,
        KeyStoreError,
    > {
        self.pool
            .get()
            .await
            .map_err(|e| KeyStoreError::Pool(e.to_string()))
    }

    /// The data key of a keypair being created: a new one, or the one stored
    /// by an earlier attempt at the same creation (so retries seal alike).
    pub async fn data_key_for_new(&self, access_key: &str) -> Result<DataKey, KeyStoreError> {
        use diesel::OptionalExtension;
        use diesel::sql_types::{Binary, Text};
        use diesel_async::RunQueryDsl;
        let (_, wrapped) = DataKey::generate(&self.cluster, access_key);
        let mut conn = self.conn().await?;
        let inserted: Option<WrappedRow> = crate::prepared(
            "INSERT INTO keypair_data_keys (access_key, wrapped_key, cluster_key_id) VALUES ($1, $2, $3) \
             ON CONFLICT (access_key) DO NOTHING RETURNING wrapped_key",
        )
        .bind::<Text, _>(access_key)
        .bind::<Binary, _>(wrapped)
        .bind::<Text, _>(self.cluster.id())
        .get_result(&mut conn)
        .await
        .optional()?;
        let wrapped = match inserted {
            Some(row) => row.wrapped_key,
            // Stored by an earlier attempt, or by a concurrent one: read it
            // in a new statement, whose snapshot sees the other's commit.
            None => {
                crate::prepared("SELECT wrapped_key FROM keypair_data_keys WHERE access_key = $1")
                    .bind::<Text, _>(access_key)
                    .get_result::<WrappedRow>(&mut conn)
                    .await?
                    .wrapped_key
            }
        };
        let key = DataKey::unwrap(&self.cluster, access_key, &wrapped)?;
        self.remember(access_key, &key);
        Ok(key)
    }

    /// The data key of an existing keypair.
    pub async fn data_key(&self, access_key: &str) -> Result<DataKey, KeyStoreError> {
        use diesel::OptionalExtension;
        use diesel::sql_types::Text;
        use diesel_async::RunQueryDsl;
        if let Some(key) = self.remembered(access_key) {
            return Ok(key);
        }
        let mut conn = self.conn().await?;
        let row: Option<WrappedRow> =
            crate::prepared("SELECT wrapped_key FROM keypair_data_keys WHERE access_key = $1")
                .bind::<Text, _>(access_key)
                .get_result(&mut conn)
                .await
                .optional()?;
        let row = row.ok_or(SecretError::Shredded)?;
        let key = DataKey::unwrap(&self.cluster, access_key, &row.wrapped_key)?;
        self.remember(access_key, &key);
        Ok(key)
    }

    /// Opens a keypair's sealed secret key.
    pub async fn open_secret(
        &self,
        access_key: &str,
        sealed: &str,
    ) -> Result<String, KeyStoreError> {
        Ok(self.data_key(access_key).await?.open(access_key, sealed)?)
    }

    /// Deletes a keypair's data key: its sealed secret, wherever it is kept
    /// (the log, backups of the log), can never be opened again.
    pub async fn shred(&self, access_key: &str) -> Result<bool, KeyStoreError> {
        use diesel::sql_types::Text;
        use diesel_async::RunQueryDsl;
        self.forget(access_key);
        let mut conn = self.conn().await?;
        let n = crate::prepared("DELETE FROM keypair_data_keys WHERE access_key = $1")
            .bind::<Text, _>(access_key)
            .execute(&mut conn)
            .await?;
        // Again: a concurrent read may have brought it back meanwhile.
        self.forget(access_key);
        Ok(n > 0)
    }
}
