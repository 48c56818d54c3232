//! The subscriber daemon as a library: `main.rs` only parses arguments and handles signals.
//!
//! A remote event's path, one folder a stage:
//! - [`intake`]: [`intake::follow`] (the live subject, sequence tracking) or
//!   [`intake::catchup`] (the archiver's catch-up service, for gaps and new hosts), scheduled by
//!   [`intake::schedule`];
//! - [`admission`]: should it be applied? One pure decision per event, with its rules beside it
//!   ([`admission::limits`], [`admission::prefixes`], [`admission::escalation`], the operators'
//!   standing orders);
//! - [`batch`]: a batch's decisions folded into what to apply (pure);
//! - [`apply`]: ops for the `apply` mode, sent over [`apply::fail2ban`] (the socket);
//! - [`state`]: what was applied, remembered in `state_dir` (cursor, [`state::holdings`],
//!   [`state::guard`]).
//!
//! [`worker`] does one batch's I/O, [`daemon`] dispatches between live events, catch-up pages
//! and upkeep, [`watch`] runs the background upkeep (gauges, the publisher's spool), [`metrics`]
//! and [`status`] make it observable.

pub mod admission;
pub mod apply;
pub mod batch;
pub mod daemon;
pub mod intake;
pub mod metrics;
pub mod state;
pub mod status;
pub mod watch;
pub mod worker;
