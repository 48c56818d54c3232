//! A power-cut simulator for the tests, in the manner of LazyFS: a FUSE file system
//! ([`fs`], run by `shared-f2b-powercut`) that a nats-server's store lives on. It keeps what
//! was written since the last `fsync`/`fdatasync` of each file undoable; [`PowerCut::cut`],
//! after everything using it was killed with SIGKILL, throws that away, as a power failure
//! throws away a disk's volatile cache.

pub mod fs;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A mounted power-cut file system; unmounted on drop.
pub struct PowerCut {
    /// Where to put what must lose its unsynced writes.
    pub mount: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl PowerCut {
    /// Mounts one over `dir/backing` at `dir/mnt`.
    pub fn mount(dir: &Path) -> PowerCut {
        let backing = dir.join("backing");
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mount).unwrap();
        let mut child = Command::new(crate::bin("shared-f2b-powercut"))
            .arg(&backing)
            .arg(&mount)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("shared-f2b-powercut runs");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("its output"));
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "mounted", "shared-f2b-powercut did not mount");
        PowerCut {
            mount,
            child,
            stdin,
            stdout,
        }
    }

    /// Cuts the power: what was written and not synced is gone. Kill (-9) whatever uses the
    /// file system first. Returns how many files lost something.
    pub fn cut(&mut self) -> usize {
        self.command("cut")
    }

    /// Everything written so far becomes durable, as the kernel's writeback makes it within
    /// half a minute (for a state that existed well before the cut). Returns how many files
    /// were waiting.
    pub fn sync(&mut self) -> usize {
        self.command("sync")
    }

    fn command(&mut self, word: &str) -> usize {
        let stdin = self.stdin.as_mut().expect("mounted");
        writeln!(stdin, "{word}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim()
            .strip_prefix(word)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no answer to {word}: {line:?}"))
    }
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mount)
            .stderr(Stdio::null())
            .status();
    }
}
