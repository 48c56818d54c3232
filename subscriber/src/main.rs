//! `shared-f2b-subscriber`: applies the other hosts' bans to the local Fail2Ban.

use clap::Parser;
use shared_f2b::{Config, config, telemetry};
use shared_f2b_subscriber::daemon;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Follows the shared ban events and applies the other hosts' bans to the local Fail2Ban.
#[derive(Parser)]
#[command(name = "shared-f2b-subscriber", version)]
struct Cli {
    /// Config file [default: /etc/shared-f2b/config.toml]
    #[arg(long, env = config::ENV_VAR)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init("info");
    let config = match Config::load(&config::resolve_path(cli.config.as_deref())) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match daemon::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: finishing the batch in flight");
    shutdown.cancel();
}
