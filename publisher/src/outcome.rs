//! How a run ends, as Fail2Ban sees it: the exit code.

use std::process::ExitCode;

/// The result of one run.
#[derive(Debug)]
pub enum Outcome {
    /// Published, spooled or deliberately skipped: Fail2Ban has nothing to worry about.
    Done,
    /// Bad arguments or config: nothing was published or spooled (exit 2).
    Usage(String),
    /// The event could not be published nor kept, or was refused (exit 1).
    Failed(String),
}

impl Outcome {
    /// Logs the reason (if any) and turns it into the process exit code.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::Usage(why) => {
                tracing::error!("{why}");
                ExitCode::from(2)
            }
            Outcome::Failed(why) => {
                tracing::error!("{why}");
                ExitCode::from(1)
            }
        }
    }
}
