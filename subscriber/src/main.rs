//! `shared-f2b-subscriber`: applies the other hosts' bans to the local Fail2Ban.

use clap::Parser;
use shared_f2b::{config, shutdown, telemetry};
use shared_f2b_subscriber::{daemon, status};
use std::path::PathBuf;
use std::process::ExitCode;

/// Follows the shared ban events and applies the other hosts' bans to the local Fail2Ban.
#[derive(Parser)]
#[command(name = "shared-f2b-subscriber", version)]
struct Cli {
    /// Config file [default: /etc/shared-f2b/config.toml]
    #[arg(long, global = true, env = config::ENV_VAR)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Show the running daemon's state (reads its metrics_listen endpoint).
    Status,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init("info");
    let config = match shared_f2b::cli::load_config(cli.config.as_deref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let result: anyhow::Result<()> = match cli.command.unwrap_or(Command::Run) {
        Command::Run => daemon::run(config, shutdown::on_signals())
            .await
            .map_err(Into::into),
        Command::Status => status::run(config.subscriber.metrics_listen)
            .await
            .map_err(Into::into),
    };
    shared_f2b::cli::exit_code(result)
}
