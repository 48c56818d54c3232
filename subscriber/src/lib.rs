//! The subscriber daemon as a library: `main.rs` only parses arguments and handles signals.
//!
//! A remote event's path: [`follow`] (the live subject, sequence tracking) or [`catchup`] (the
//! archiver's catch-up service, for gaps and new hosts) → [`worker`] (one batch at a time):
//! [`admission`] (should it be applied? with [`limits`], [`guard`], [`holdings`], the operators'
//! standing orders, [`prefixes`] and [`escalation`]) → [`apply`]
//! (ops for the `apply` mode) → [`fail2ban`] (the socket) → [`state`] (remember it). [`daemon`]
//! runs the loop, [`watch`] the background upkeep (gauges, the publisher's spool), [`metrics`]
//! and [`status`] make it observable.

pub mod admission;
pub mod apply;
pub mod catchup;
pub mod daemon;
pub mod escalation;
pub mod fail2ban;
pub mod follow;
pub mod guard;
pub mod holdings;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod prefixes;
pub mod state;
pub mod status;
pub mod watch;
pub mod worker;
