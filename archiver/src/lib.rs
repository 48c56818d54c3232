//! The archiver as a library: `main.rs` only parses arguments and handles signals.
//!
//! An event's path: [`ingest`] (the durable consumer, kept as it must be by [`consumer`]) →
//! [`store`] (batched, idempotent inserts). Back out: [`query`] → [`catchup_service`] (catch-up
//! and replay pages over NATS for the subscribers) or [`commands`] (operator commands, printed
//! by [`report`]); [`blocklist`] (the bans in force, rendered by [`blocklist::format`]) →
//! [`http`] (the feeds and the site page on `http_listen`) and `export`; [`misp`] (a MISP
//! feed, misp-push). [`db`] holds the connection and the migrations; [`daemon`] runs the parts
//! as supervised tasks.

pub mod blocklist;
pub mod catchup_service;
pub mod commands;
pub mod consumer;
pub mod daemon;
pub mod db;
pub mod http;
pub mod ingest;
pub mod intake;
pub mod legacy;
pub mod metrics;
pub mod misp;
pub mod query;
pub mod relay;
pub mod report;
pub mod rewind;
pub mod store;
pub mod text;
pub mod verify;
