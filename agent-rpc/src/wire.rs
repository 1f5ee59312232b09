//! The envelope every message travels in, and how bodies are encoded.
//!
//! A message is three ZeroMQ frames (a ROUTER adds the peer's identity in
//! front of them):
//!
//! ```text
//! [ header (48 bytes) | body (MessagePack, ≤ max_message_bytes) | mac (32 bytes) ]
//! ```
//!
//! The header is fixed-size and big-endian:
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..4 | magic | `b"BAIR"`: not one of ours otherwise |
//! | 4..6 | version | the protocol version the body is written in ([`PROTOCOL_VERSION`]) |
//! | 6 | kind | 1 = request, 2 = response |
//! | 7 | flags | reserved, sent as 0, ignored |
//! | 8..16 | request id | chosen by the client, echoed by the server |
//! | 16..24 | deadline | unix milliseconds after which the caller has given up (0 = none) |
//! | 24..32 | timestamp | unix milliseconds when the message was sealed |
//! | 32..48 | nonce | 16 random bytes, never reused |
//!
//! The MAC is HMAC-SHA256 with the cluster key over `header ‖ body`, so every
//! field above, the version included, is authenticated.
//!
//! **What is stable.** The envelope (frames, header layout, MAC) never changes
//! without changing the magic. The protocol version governs only the body: a
//! peer that receives a body of another version refuses it instead of guessing,
//! and a server answers such a request with
//! [`RemoteError::VersionMismatch`](crate::RemoteError::VersionMismatch) in a
//! response whose header carries the server's own version, so a peer of any
//! version can tell what happened from the header alone.
//!
//! Bodies are MessagePack with field names (`rmp_serde::to_vec_named`), so
//! fields marked `#[serde(default)]` may be added within a version. A request
//! body is a [`Request`](crate::Request); a response body is a
//! [`ReplyBody`](crate::ReplyBody), i.e. `Result<Response, RemoteError>`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;

use crate::auth::RejectReason;

/// The protocol version this crate speaks: the version of the body schema.
pub const PROTOCOL_VERSION: u16 = 1;

/// The first four bytes of every header.
pub const MAGIC: [u8; 4] = *b"BAIR";

/// Length of the header frame.
pub const HEADER_LEN: usize = 48;

/// Length of the MAC frame (HMAC-SHA256).
pub const MAC_LEN: usize = 32;

/// Length of the nonce inside the header.
pub const NONCE_LEN: usize = 16;

/// Number of frames in a message (without a ROUTER's identity frame).
pub const FRAMES: usize = 3;

/// The shortest cluster key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// Whether a message asks or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// From the manager (client) to the agent (server).
    Request,
    /// From the agent back to the manager.
    Response,
}

impl Kind {
    fn to_byte(self) -> u8 {
        match self {
            Kind::Request => 1,
            Kind::Response => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Request),
            2 => Some(Kind::Response),
            _ => None,
        }
    }
}

/// The fixed-size header of a message. See the [module docs](self) for the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The protocol version of the body.
    pub version: u16,
    /// Request or response.
    pub kind: Kind,
    /// The request id (a response echoes the request's).
    pub request_id: u64,
    /// Unix milliseconds after which the caller no longer waits; 0 = none.
    /// Responses carry 0.
    pub deadline_ms: u64,
    /// Unix milliseconds when the message was sealed.
    pub timestamp_ms: u64,
    /// Random bytes that make the message unique (replay protection).
    pub nonce: [u8; NONCE_LEN],
}

impl Header {
    /// A fresh request header of this crate's version: stamped now, with a
    /// random nonce.
    pub fn request(request_id: u64, deadline_ms: u64) -> Header {
        Header {
            version: PROTOCOL_VERSION,
            kind: Kind::Request,
            request_id,
            deadline_ms,
            timestamp_ms: now_ms(),
            nonce: rand::random(),
        }
    }

    /// A fresh response header of this crate's version for `request_id`.
    pub fn response(request_id: u64) -> Header {
        Header {
            version: PROTOCOL_VERSION,
            kind: Kind::Response,
            request_id,
            deadline_ms: 0,
            timestamp_ms: now_ms(),
            nonce: rand::random(),
        }
    }

    /// The header's bytes on the wire.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.version.to_be_bytes());
        b[6] = self.kind.to_byte();
        b[7] = 0;
        b[8..16].copy_from_slice(&self.request_id.to_be_bytes());
        b[16..24].copy_from_slice(&self.deadline_ms.to_be_bytes());
        b[24..32].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[32..48].copy_from_slice(&self.nonce);
        b
    }

    /// Reads a header. Fails on a wrong length, a wrong magic or an unknown kind.
    pub fn parse(bytes: &[u8]) -> Result<Header, RejectReason> {
        let b: &[u8; HEADER_LEN] = bytes.try_into().map_err(|_| RejectReason::Malformed)?;
        if b[0..4] != MAGIC {
            return Err(RejectReason::Malformed);
        }
        let kind = Kind::from_byte(b[6]).ok_or(RejectReason::Malformed)?;
        Ok(Header {
            version: u16::from_be_bytes([b[4], b[5]]),
            kind,
            request_id: be_u64(&b[8..16]),
            deadline_ms: be_u64(&b[16..24]),
            timestamp_ms: be_u64(&b[24..32]),
            nonce: nonce_of(&b[32..48]),
        })
    }
}

fn be_u64(s: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    u64::from_be_bytes(a)
}

fn nonce_of(s: &[u8]) -> [u8; NONCE_LEN] {
    let mut a = [0u8; NONCE_LEN];
    a.copy_from_slice(s);
    a
}

/// The shared secret of the cluster: every manager and agent holds it, and
/// every message in both directions is signed with it.
///
/// Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct ClusterKey {
    mac: Hmac<Sha256>,
}

/// A cluster key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is shorter than [`MIN_KEY_LEN`] bytes. Use 32 random bytes.
    #[error(
        "the cluster key has {len} bytes; at least {min} are needed (32 random bytes recommended)"
    )]
    TooShort {
        /// The given key's length.
        len: usize,
        /// The minimum.
        min: usize,
    },
}

impl ClusterKey {
    /// Makes a key from raw bytes (at least [`MIN_KEY_LEN`]; 32 random bytes
    /// recommended).
    pub fn new(key: impl AsRef<[u8]>) -> Result<ClusterKey, KeyError> {
        let key = key.as_ref();
        if key.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                len: key.len(),
                min: MIN_KEY_LEN,
            });
        }
        // HMAC accepts keys of any length; the error case cannot happen, but
        // it is mapped rather than unwrapped.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| KeyError::TooShort {
            len: key.len(),
            min: MIN_KEY_LEN,
        })?;
        Ok(ClusterKey { mac })
    }

    fn keyed(&self, header: &[u8], body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(header);
        mac.update(body);
        mac
    }

    /// The MAC of `header ‖ body`.
    pub fn sign(&self, header: &[u8], body: &[u8]) -> [u8; MAC_LEN] {
        self.keyed(header, body).finalize().into_bytes().into()
    }

    /// Whether `tag` is the MAC of `header ‖ body`, compared in constant time.
    pub fn verify(&self, header: &[u8], body: &[u8], tag: &[u8]) -> bool {
        self.keyed(header, body).verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Seals a message: the three frames `[header, body, mac]`.
pub fn seal(key: &ClusterKey, header: &Header, body: Vec<u8>) -> Vec<Vec<u8>> {
    let h = header.to_bytes();
    let mac = key.sign(&h, &body);
    vec![h.to_vec(), body, mac.to_vec()]
}

/// Checks a message's structure and MAC — not its age or nonce, which need
/// the receiver's memory (see [`Authenticator`](crate::auth::Authenticator)) —
/// and returns its header. The body is `frames[1]`.
///
/// Checks, in order: three frames; header and MAC of the right length; a body
/// of at most `max_body` bytes; the magic; the MAC (constant time); the kind.
/// Nothing is decoded before the MAC holds.
pub fn open<F: AsRef<[u8]>>(
    key: &ClusterKey,
    frames: &[F],
    max_body: usize,
) -> Result<Header, RejectReason> {
    let [header, body, mac] = frames else {
        return Err(RejectReason::Malformed);
    };
    let (header, body, mac) = (header.as_ref(), body.as_ref(), mac.as_ref());
    if body.len() > max_body {
        return Err(RejectReason::TooLarge);
    }
    if header.len() != HEADER_LEN || mac.len() != MAC_LEN || header[0..4] != MAGIC {
        return Err(RejectReason::Malformed);
    }
    if !key.verify(header, body, mac) {
        return Err(RejectReason::BadMac);
    }
    Header::parse(header)
}

/// A body that could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Serialisation failed (a value MessagePack cannot hold).
    #[error("cannot encode the body: {0}")]
    Encode(String),
    /// The bytes are not a body of the expected type in this version.
    #[error("cannot decode the body: {0}")]
    Decode(String),
}

/// Encodes a body as MessagePack with field names.
pub fn encode_body<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    rmp_serde::to_vec_named(value).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a MessagePack body. Never panics on garbage; nesting is limited
/// by the decoder (1,024 levels).
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(bytes).map_err(|e| CodecError::Decode(e.to_string()))
}

/// The current time in unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Request, Response, agent::HealthRequest};

    fn key(b: u8) -> ClusterKey {
        ClusterKey::new([b; 32]).unwrap()
    }

    #[test]
    fn header_round_trips() {
        let h = Header::request(42, 123_456);
        let back = Header::parse(&h.to_bytes()).unwrap();
        assert_eq!(h, back);
        assert_eq!(back.version, PROTOCOL_VERSION);
        assert_eq!(back.kind, Kind::Request);
    }

    #[test]
    fn header_rejects_bad_magic_kind_and_length() {
        let mut b = Header::response(1).to_bytes();
        assert_eq!(Header::parse(&b[..47]), Err(RejectReason::Malformed));
        b[6] = 9;
        assert_eq!(Header::parse(&b), Err(RejectReason::Malformed));
        b[6] = 2;
        b[0] = b'X';
        assert_eq!(Header::parse(&b), Err(RejectReason::Malformed));
    }

    #[test]
    fn seal_then_open() {
        let k = key(7);
        let body = encode_body(&Request::Health(HealthRequest {
            message: "hi".into(),
        }))
        .unwrap();
        let h = Header::request(9, 0);
        let frames = seal(&k, &h, body.clone());
        assert_eq!(open(&k, &frames, 1024).unwrap(), h);
        let req: Request = decode_body(&frames[1]).unwrap();
        assert_eq!(
            req,
            Request::Health(HealthRequest {
                message: "hi".into()
            })
        );
    }

    #[test]
    fn any_flipped_bit_breaks_the_mac() {
        let k = key(7);
        let frames = seal(&k, &Header::request(9, 0), b"body bytes".to_vec());
        for f in 0..3 {
            for i in 0..frames[f].len() {
                let mut t = frames.clone();
                t[f][i] ^= 0x01;
                let r = open(&k, &t, 1024);
                assert!(
                    matches!(r, Err(RejectReason::BadMac | RejectReason::Malformed)),
                    "frame {f} byte {i}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn wrong_key_is_bad_mac() {
        let frames = seal(&key(1), &Header::request(9, 0), b"x".to_vec());
        assert_eq!(open(&key(2), &frames, 1024), Err(RejectReason::BadMac));
    }

    #[test]
    fn structure_is_checked_before_the_mac() {
        let k = key(1);
        let frames = seal(&k, &Header::request(9, 0), vec![0u8; 100]);
        assert_eq!(open(&k, &frames, 99), Err(RejectReason::TooLarge));
        assert_eq!(open(&k, &frames[..2], 1024), Err(RejectReason::Malformed));
        let empty: [&[u8]; 0] = [];
        assert_eq!(open(&k, &empty, 1024), Err(RejectReason::Malformed));
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_the_key() {
        assert!(ClusterKey::new(b"short").is_err());
        assert_eq!(format!("{:?}", key(3)), "ClusterKey(<redacted>)");
    }

    #[test]
    fn garbage_never_decodes_into_a_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for _ in 0..2_000 {
            let len = rng.random_range(0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = decode_body::<Request>(&bytes);
            let _ = decode_body::<Result<Response, crate::RemoteError>>(&bytes);
        }
    }
}
