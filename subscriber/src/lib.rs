//! The subscriber daemon as a library: `main.rs` only parses arguments and handles signals.
//!
//! A remote event's path: [`catchup`] (from the archive, at start) or [`follow`] (ordered
//! consumers on the stream) → [`worker`] (one batch at a time): [`filter`] (decode, cross-check,
//! drop own/expired/protected) → [`limits`] (rate, cap, trust, quorum) → [`holdings`] (who holds
//! each ban) → [`apply`] (ops for the `apply` mode) → [`fail2ban`] (the socket) → [`state`]
//! (remember it). [`daemon`] runs the loop, [`watch`] the background upkeep (gauges, the
//! publisher's spool), [`metrics`] and [`status`] make it observable.

pub mod apply;
pub mod catchup;
pub mod daemon;
pub mod fail2ban;
pub mod filter;
pub mod follow;
pub mod holdings;
pub mod limits;
pub mod metrics;
pub mod state;
pub mod status;
pub mod watch;
pub mod worker;
