//! Keypairs: the aggregate, key generation and sealing, and the workflows
//! that keep a keypair and its owner consistent.

mod aggregate;
mod workflows;

pub use aggregate::{Keypair, KeypairCommand, KeypairError};
pub use manager_events::keypair::{KeypairEvent, KeypairFields, KeypairPatch, stream_id};
pub use workflows::{
    CreateKeypair, DeleteKeypair, NewKeypair, generate_access_key, generate_secret_key,
};
