//! `shared-f2b-bench`: measures Shared Fail2Ban on this machine against real nats-server and
//! fail2ban-server, and prints one table (and `--json PATH`) with the reference figure measured
//! in the same run beside each result.

mod archive;
mod control;
mod fanout;
mod federation;
mod feeds;
mod intake;
mod legacy;
mod packets;
mod powercut;
mod publish;
mod report;
mod signing;
mod site;
mod subscribe;
mod sync;

use clap::Parser;

/// Runs the benchmarks; build with `cargo build --release --workspace` first.
#[derive(Parser)]
struct Cli {
    /// Publisher runs for the latency figures.
    #[arg(long, default_value_t = 1000)]
    publish_runs: usize,
    /// End-to-end latency runs with `apply = "ban"`.
    #[arg(long, default_value_t = 1000)]
    latency_runs: usize,
    /// End-to-end latency runs with `apply = "attempt"` (each waits for Fail2Ban's ~200 ms loop).
    #[arg(long, default_value_t = 100)]
    attempt_runs: usize,
    /// Bans in the burst.
    #[arg(long, default_value_t = 10_000)]
    burst: usize,
    /// Events for the archiver ingest and backfill figures.
    #[arg(long, default_value_t = 100_000)]
    ingest: usize,
    /// Rows in the table for the `history --ip` figure.
    #[arg(long, default_value_t = 2_000_000)]
    history_rows: usize,
    /// Simulated hosts for the fan-out figures.
    #[arg(long, default_value_t = 2000)]
    fanout_hosts: usize,
    /// Bans per design in the fan-out figures.
    #[arg(long, default_value_t = 50)]
    fanout_runs: usize,
    /// Real subscriber processes for the fan-out figures (0: skip).
    #[arg(long, default_value_t = 200)]
    fanout_processes: usize,
    /// Runs per mode for the packet figures (real hosts in network namespaces).
    #[arg(long, default_value_t = 50)]
    packet_runs: usize,
    /// Pardons for the operator-control figures.
    #[arg(long, default_value_t = 200)]
    control_runs: usize,
    /// Active bans in the archive for the feed figures.
    #[arg(long, default_value_t = 100_000)]
    feed_bans: usize,
    /// Requests per feed figure.
    #[arg(long, default_value_t = 200)]
    feed_runs: usize,
    /// Page loads and requests per site page figure.
    #[arg(long, default_value_t = 30)]
    site_runs: usize,
    /// Events at site a while site c is cut off (federation group).
    #[arg(long, default_value_t = 10_000)]
    federation_missed: u32,
    /// Sites in the many-sites federation figure (0: left out).
    #[arg(long, default_value_t = 32)]
    federation_sites: usize,
    /// Power cuts the powercut group measures.
    #[arg(long, default_value_t = 10)]
    powercut_runs: usize,
    /// Bans published before each cut.
    #[arg(long, default_value_t = 1000)]
    powercut_bans: usize,
    /// Entries of the list the intake group takes in.
    #[arg(long, default_value_t = 100_000)]
    intake_entries: usize,
    /// Rows in the original's table for the import-legacy figures (legacy group).
    #[arg(long, default_value_t = 1_850_000)]
    legacy_rows: usize,
    /// Bans of the last hour for the old API's `time` figure (legacy group).
    #[arg(long, default_value_t = 100_000)]
    legacy_api_bans: usize,
    /// Only these groups, comma-separated: publish, signing, subscribe, archive, fanout,
    /// packets, control, feeds, site (default: all of these), legacy (only when named: it
    /// fills a 1,850,000-row table and imports it three times), federation (only when named:
    /// it starts 35 nats-servers and takes about 4 minutes), intake (only when named: a
    /// 100,000-entry list on a 3-host site), sync (only when named, with
    /// SHARED_F2B_NATS_SERVER a nats-server 2.10 or newer: what sync_interval: always costs),
    /// powercut (only when named: power cuts of the NATS host and the time until every host
    /// is consistent again).
    #[arg(long)]
    only: Option<String>,
    /// Only write a screenshot of the site page over a made-up site here (the README's).
    #[arg(long)]
    site_screenshot: Option<std::path::PathBuf>,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(path) = &cli.site_screenshot {
        site::screenshot(path).await;
        return Ok(());
    }
    let mut report = report::Report::default();
    let wants = |group: &str| {
        cli.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|g| g == group))
    };
    if wants("publish") {
        publish::run(&mut report, cli.publish_runs);
    }
    if wants("signing") {
        signing::run(&mut report, cli.publish_runs);
    }
    if wants("subscribe") {
        subscribe::run(&mut report, cli.latency_runs, cli.attempt_runs, cli.burst).await;
    }
    if wants("archive") {
        archive::run(&mut report, cli.ingest, cli.history_rows).await;
    }
    if wants("fanout") {
        fanout::run(&mut report, cli.fanout_hosts, cli.fanout_runs).await;
        if cli.fanout_processes > 0 {
            fanout::run_processes(&mut report, cli.fanout_processes, cli.fanout_runs).await;
        }
    }
    if wants("control") {
        control::run(&mut report, cli.control_runs).await;
    }
    if wants("feeds") {
        feeds::run(&mut report, cli.feed_bans, cli.feed_runs).await;
    }
    if wants("site") {
        site::run(&mut report, cli.feed_bans, cli.site_runs).await;
    }
    let named = |group: &str| {
        cli.only
            .as_deref()
            .is_some_and(|o| o.split(',').any(|g| g == group))
    };
    if named("legacy") {
        legacy::run(&mut report, cli.legacy_rows);
        legacy::api(&mut report, cli.legacy_api_bans, cli.latency_runs.min(200)).await;
    }
    if named("federation") {
        federation::run(
            &mut report,
            cli.latency_runs,
            cli.federation_missed,
            cli.federation_sites,
        )
        .await;
    }
    if named("intake") {
        intake::run(&mut report, cli.intake_entries).await;
    }
    if named("sync") {
        sync::run(&mut report, cli.publish_runs, cli.burst).await;
    }
    if named("powercut") {
        powercut::run(&mut report, cli.powercut_runs, cli.powercut_bans).await;
    }
    if wants("packets") {
        tokio::task::block_in_place(|| packets::run(&mut report, cli.packet_runs));
    }
    report.print();
    if let Some(path) = cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.to_json())?)?;
    }
    Ok(())
}
