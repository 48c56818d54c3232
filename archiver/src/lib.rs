//! The archiver as a library: `main.rs` only parses arguments and handles signals.
//!
//! An event's path: [`ingest`] (the durable consumer, kept as it must be by [`consumer`]) → [`store`] (batched, idempotent inserts);
//! back out: [`query`] → [`serve`] (replay pages over NATS) or [`commands`] / [`report`]
//! (operator commands); [`blocklist`] → [`feeds`] (the lists over HTTP) and `export`,
//! [`site`] (the site page, beside the feeds), and
//! [`misp`] (a MISP feed, misp-push). [`db`] holds the connection and the migrations.

pub mod blocklist;
pub mod commands;
pub mod consumer;
pub mod daemon;
pub mod db;
pub mod feeds;
pub mod ingest;
pub mod metrics;
pub mod misp;
pub mod query;
pub mod report;
pub mod serve;
pub mod site;
pub mod store;
