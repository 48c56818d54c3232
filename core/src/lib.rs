//! What the Shared Fail2Ban binaries share: the event schema, subject naming, the config file,
//! the NATS connection, publishing with acks, and the local spool.
//!
//! An event's path through this crate: [`event`] (build and check) → [`subject`] (where it goes)
//! → [`publish`] (send, wait for the ack) or [`spool`] (keep it until the server is back);
//! on the other side [`inbound`] (decode and cross-check a received message) and [`replay`]
//! (the archiver's catch-up protocol). Operators' orders (pardon, allow, revoke, ban) are
//! [`control`] events on their own subjects. Events and orders are signed ([`signing`]); the
//! operators vouch for host keys in key records, which a reader keeps in its [`keyring`].

pub mod cli;
pub mod config;
pub mod confirm;
pub mod control;
pub mod event;
pub mod federation;
pub mod health;
pub mod inbound;
pub mod intake;
pub mod keyring;
pub mod metrics;
pub mod nats;
pub mod publish;
pub mod replay;
pub mod shutdown;
pub mod signing;
pub mod spool;
pub mod standing;
pub mod subject;
pub mod tasks;
pub mod telemetry;

pub use config::Config;
pub use event::{Action, Event};
