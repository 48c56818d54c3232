//! What the daemons' `main` functions share: loading the config named on the command line, and
//! turning the outcome into an exit code with the reason logged.

use crate::config::{self, Config};
use std::path::Path;
use std::process::ExitCode;

/// Loads the config from `--config`, `$SHARED_F2B_CONFIG` or the default path; on failure logs
/// why and gives exit code 2.
pub fn load_config(flag: Option<&Path>) -> Result<Config, ExitCode> {
    Config::load(&config::resolve_path(flag)).map_err(|e| {
        tracing::error!("{e}");
        ExitCode::from(2)
    })
}

/// Exit code 0, or 1 with the error (and its causes) logged.
pub fn exit_code<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}
