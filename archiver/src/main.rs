//! `shared-f2b-archiver`: archives every event in a database and serves replay (being built).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("shared-f2b-archiver is not built yet: see the archiver issue");
    ExitCode::from(1)
}
