//! `shared-f2b-admin`: an operator's orders for the whole site (pardon, allow, revoke, ban) as
//! signed control events on the stream, what is in force now (from the archiver), and the
//! hosts' keys (`host add/remove/rotate/list/prune`).

mod archive;
mod cli;
mod commands;
mod enrol;
mod error;
mod hosts;
mod order;
mod publish;
mod table;

use clap::Parser;
use cli::Cli;
use shared_f2b::{Config, config, telemetry};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The command prints its own outcome; the log only says what went wrong beside it.
    telemetry::init("error");
    // Needs no config: it makes the key an operator's config then names.
    if let cli::Command::OperatorKey { out } = &cli.command {
        return match enrol::operator_key(out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => e.report(),
        };
    }
    let config = match Config::load(&config::resolve_path(cli.config.as_deref())) {
        Ok(config) => config,
        Err(e) => return error::AdminError::Config(e).report(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded runtime starts");
    match runtime.block_on(commands::run(&config, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
