//! Why a command did not do what was asked, and the exit code that says so: 2 for bad input
//! (nothing was sent), 1 for a refusal or failure.

use crate::archive::ArchiveError;
use crate::publish::PublishError;
use shared_f2b::config::ConfigError;
use shared_f2b::control::ControlError;
use shared_f2b::nats::ConnectError;
use std::process::ExitCode;
use thiserror::Error;
use uuid::Uuid;

/// Everything a command can end with besides success.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The config file is missing or invalid (exit 2).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The order itself is invalid (empty reason…); nothing was published (exit 2).
    #[error("invalid order: {0}")]
    Order(#[from] ControlError),
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// The server refused the publish: this NATS user is not an operator.
    #[error(
        "refused: {who} may not publish control events ({reason}); run shared-f2b-admin with an \
         operator's config"
    )]
    NotOperator { who: String, reason: String },
    /// The server refused something else on this connection.
    #[error("refused: {who}: {reason}")]
    Refused { who: String, reason: String },
    #[error("{0}")]
    Publish(#[from] PublishError),
    #[error("{0}")]
    Archive(#[from] ArchiveError),
    /// `host` needs the operator's key.
    #[error(
        "no operator key: set [trust] operator_seed_file (make one with \
         `shared-f2b-admin operator-key --out FILE`); key records are signed with it"
    )]
    NoOperatorKey,
    #[error("{0}")]
    Key(#[from] shared_f2b::signing::KeyError),
    #[error("invalid host name: {0}")]
    BadHost(String),
    #[error("host {0} is enrolled already (see `shared-f2b-admin host list`); nothing changed")]
    HostExists(String),
    #[error("host {0} is not enrolled (see `shared-f2b-admin host list`); nothing changed")]
    NoSuchHost(String),
    #[error("{} exists already; nothing changed (choose another --out)", .0.display())]
    FileExists(std::path::PathBuf),
    #[error("{0}")]
    Hosts(#[from] crate::hosts::HostsError),
    /// `revoke` of something that is not a pardon or allow in force.
    #[error("not revoked: {id} is {what}; nothing was published")]
    NotRevocable { id: Uuid, what: String },
}

impl AdminError {
    /// 2 for bad input, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Config(_)
            | AdminError::Order(_)
            | AdminError::BadHost(_)
            | AdminError::HostExists(_)
            | AdminError::NoSuchHost(_)
            | AdminError::FileExists(_)
            | AdminError::NoOperatorKey => 2,
            _ => 1,
        }
    }

    /// Prints the error on stderr and gives the exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("shared-f2b-admin: {self}");
        ExitCode::from(self.exit_code())
    }
}
