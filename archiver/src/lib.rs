//! The archiver as a library: `main.rs` only parses arguments and handles signals.
//!
//! An event's path: [`ingest`] (durable consumer) → [`store`] (batched, idempotent inserts);
//! back out: [`query`] → [`serve`] (replay pages over NATS) or [`commands`] / [`report`]
//! (operator commands). [`db`] holds the connection and the migrations.

pub mod commands;
pub mod daemon;
pub mod db;
pub mod ingest;
pub mod metrics;
pub mod query;
pub mod report;
pub mod serve;
pub mod store;
