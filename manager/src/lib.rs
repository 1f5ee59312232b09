//! The manager: composition root and CLI.
//!
//! This crate wires the library crates into one binary, `manager`, whose roles
//! are subcommands: `migrate` applies the embedded schema, `start-server` runs
//! the API and metrics endpoints, `verify-log` audits the event log's hash
//! chain. It owns configuration loading and process lifecycle (signals,
//! graceful shutdown); domain logic lives in the other crates.
//!
//! # Layout
//! - [`config`]: the TOML configuration with environment overrides.
//! - [`server`]: the HTTP listeners and their graceful shutdown.
//! - [`fixture`]: loading fixture files through commands.

pub mod config;
pub mod fixture;
pub mod server;

/// The API version this manager speaks (Backend.AI manager 23.09 line), as
/// advertised by `GET /`. Client 23.9.x negotiates down to it.
pub const API_VERSION: &str = "v7.20230615";

/// The manager release advertised next to the API version.
pub const MANAGER_VERSION: &str = "23.09.10";
