//! `shared-f2b-publish`: run by Fail2Ban's `shared-f2b` action for each ban and unban.

mod action;
mod cli;
mod flush;
mod outcome;

use clap::Parser;
use cli::{Cli, Command};
use outcome::Outcome;
use shared_f2b::{Action, Config, config, telemetry};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init("info");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded runtime starts");
    runtime.block_on(run(cli)).exit_code()
}

async fn run(cli: Cli) -> Outcome {
    let config = match Config::load(&config::resolve_path(cli.config.as_deref())) {
        Ok(config) => config,
        Err(e) => return Outcome::Usage(e.to_string()),
    };
    match &cli.command {
        Command::Ban(args) => action::run(&config, Action::Ban, args).await,
        Command::Unban(args) => action::run(&config, Action::Unban, args).await,
        Command::Flush => flush::run(&config).await,
    }
}
