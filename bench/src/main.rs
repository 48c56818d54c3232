//! `shared-f2b-bench`: measures Shared Fail2Ban on this machine against real nats-server and
//! fail2ban-server, and prints one table (and `--json PATH`) with the reference figure measured
//! in the same run beside each result.

mod publish;
mod report;

use clap::Parser;

/// Runs the benchmarks; build with `cargo build --release --workspace` first.
#[derive(Parser)]
struct Cli {
    /// Publisher runs for the latency figures.
    #[arg(long, default_value_t = 1000)]
    publish_runs: usize,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut report = report::Report::default();
    publish::run(&mut report, cli.publish_runs);
    report.print();
    if let Some(path) = cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.to_json())?)?;
    }
    Ok(())
}
