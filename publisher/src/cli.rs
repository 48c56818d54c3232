//! Command-line interface of `shared-f2b-publish`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Publishes one Fail2Ban ban or unban to NATS JetStream (run by the `shared-f2b` action).
#[derive(Debug, Parser)]
#[command(name = "shared-f2b-publish", version)]
pub struct Cli {
    /// Config file [default: /etc/shared-f2b/config.toml]
    #[arg(long, global = true, env = shared_f2b::config::ENV_VAR)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a ban (Fail2Ban's actionban).
    Ban(EventArgs),
    /// Publish an early (manual) unban (Fail2Ban's actionunban); natural expiry is skipped.
    Unban(EventArgs),
    /// Send every spooled event now and report how many were sent and how many remain.
    Flush,
}

/// The ticket Fail2Ban hands to the action, one tag per argument.
#[derive(Debug, Args)]
pub struct EventArgs {
    /// Jail name (`<name>`).
    #[arg(long)]
    pub jail: String,
    /// Address (`<ip>`), IPv4 or IPv6.
    #[arg(long)]
    pub ip: String,
    /// Ban length in seconds, -1 for permanent (`<bantime>`) [ban default: 600].
    #[arg(long, allow_negative_numbers = true)]
    pub bantime: Option<i64>,
    /// Failures that led to the ban (`<failures>`).
    #[arg(long, default_value_t = 0)]
    pub failures: u32,
    /// Ban time, seconds since the epoch (`<time>`) [default: now].
    #[arg(long)]
    pub time: Option<String>,
    /// The jail's port(s) (`<port>`, e.g. ssh, 22, http,https), shown with the ban; empty: none.
    #[arg(long)]
    pub port: Option<String>,
    /// The jail's protocol (`<protocol>`, e.g. tcp), shown with the ban; empty: none.
    #[arg(long)]
    pub protocol: Option<String>,
    /// 1 when Fail2Ban restored the ban from its database at start-up (`<restored>`): skipped.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub restored: u8,
}
