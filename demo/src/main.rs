//! `shared-f2b-demo`: Shared Fail2Ban's story on one machine, in a temporary directory.
//!
//! Where it can (root, network namespaces), a site of real hosts, each with its own address
//! ([`site`]): mallory fails to log in to alice, then alice, bob and charlie drop her packets;
//! dave joins late and backfills the ban from the archive. Elsewhere, or with `--loopback`, the
//! loopback demo ([`loopback`]), after saying why. `--federation`: three sites and a hub
//! ([`federation`]).

mod federation;
mod loopback;
mod site;

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--federation") {
        return tokio::runtime::Runtime::new()?.block_on(federation::run());
    }
    let reason = if std::env::args().any(|a| a == "--loopback") {
        Some("--loopback was given".to_owned())
    } else {
        site::unavailable()
    };
    match reason {
        None => site::run(),
        Some(why) => {
            println!(
                "Not running the real-hosts demo: {why}.\nRunning the loopback demo instead.\n"
            );
            tokio::runtime::Runtime::new()?.block_on(loopback::run())
        }
    }
}

/// Whether `tool` is an executable on the PATH.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
}
