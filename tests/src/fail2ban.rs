//! Private fail2ban-server sandboxes: Debian's config tree copied into a temp dir, the shipped
//! Shared Fail2Ban files added, socket, pidfile, database and log pointed inside it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A running fail2ban-server whose whole world lives in `dir`.
pub struct Fail2Ban {
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The network namespace it runs in (its actions' firewall rules apply there).
    pub netns: Option<String>,
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Fail2Ban {
    /// Starts a server in `dir` with `jails` as its `jail.local` (Debian's own jails are off).
    pub fn start(dir: &Path, jails: &str) -> Fail2Ban {
        Fail2Ban::launch_with(
            dir,
            jails,
            &crate::repo_root().join("fail2ban"),
            false,
            None,
        )
    }

    /// As [`Fail2Ban::start`], in network namespace `netns` (a host of a [`crate::netns`]
    /// network: its banactions change that host's firewall).
    pub fn start_in_netns(dir: &Path, jails: &str, netns: &str) -> Fail2Ban {
        let files = crate::repo_root().join("fail2ban");
        Fail2Ban::launch_with(dir, jails, &files, false, Some(netns.to_owned()))
    }

    /// As [`Fail2Ban::start`], with the Shared Fail2Ban files (`action.d/`, `filter.d/`, and
    /// the `jail.d/*.conf` jails) taken from `files` (e.g. an installed `/etc/fail2ban`).
    pub fn start_with(dir: &Path, jails: &str, files: &Path) -> Fail2Ban {
        Fail2Ban::launch_with(dir, jails, files, true, None)
    }

    fn launch_with(
        dir: &Path,
        jails: &str,
        files: &Path,
        with_jail_d: bool,
        netns: Option<String>,
    ) -> Fail2Ban {
        let conf = dir.join("conf");
        copy_tree(Path::new("/etc/fail2ban"), &conf);
        for entry in std::fs::read_dir(conf.join("jail.d")).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        copy_tree(&files.join("action.d"), &conf.join("action.d"));
        copy_tree(&files.join("filter.d"), &conf.join("filter.d"));
        let jail_d = std::fs::read_dir(files.join("jail.d"))
            .ok()
            .filter(|_| with_jail_d);
        if let Some(entries) = jail_d {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|x| x == "conf") {
                    std::fs::copy(entry.path(), conf.join("jail.d").join(entry.file_name()))
                        .unwrap();
                }
            }
        }
        // An action that does nothing, so tests and benchmarks measure Fail2Ban, not a firewall.
        std::fs::write(
            conf.join("action.d/noop.conf"),
            "[Definition]\nactionstart =\nactionstop =\nactioncheck =\nactionban =\nactionunban =\n",
        )
        .unwrap();
        // The filter of the tests' `login` jails: `Failed login from <ip>`, no date.
        std::fs::write(
            conf.join("filter.d/login.conf"),
            "[Definition]\nfailregex = ^Failed login from <HOST>\\s*$\ndatepattern = {NONE}\n",
        )
        .unwrap();
        let socket = dir.join("f2b.sock");
        std::fs::write(
            conf.join("fail2ban.local"),
            format!(
                "[Definition]\nsocket = {}\npidfile = {}\ndbfile = {}\nlogtarget = {}\n\
                 loglevel = INFO\nallowipv6 = auto\n",
                socket.display(),
                dir.join("f2b.pid").display(),
                dir.join("f2b.sqlite3").display(),
                dir.join("f2b.log").display()
            ),
        )
        .unwrap();
        std::fs::write(conf.join("jail.local"), jails).unwrap();
        let server = Fail2Ban {
            dir: dir.to_path_buf(),
            socket,
            netns,
        };
        server.launch();
        server
    }

    /// Starts the server again after [`Fail2Ban::stop`], with the same config.
    pub fn restart(&self) {
        self.launch();
    }

    fn launch(&self) {
        // Its start-up chatter goes to a file, shown if it fails.
        let out_path = self.dir.join("f2b-start.out");
        let out = std::fs::File::create(&out_path).unwrap();
        let status = crate::netns::command_in(self.netns.as_deref(), "fail2ban-server")
            .arg("-c")
            .arg(self.dir.join("conf"))
            .args(["-b", "-x"])
            // Log timestamps in UTC, so benchmarks can compare them with the system clock.
            .env("TZ", "UTC")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .expect("fail2ban-server runs (Debian package fail2ban)");
        assert!(
            status.success(),
            "fail2ban-server failed to start: {status}\n{}",
            std::fs::read_to_string(&out_path).unwrap_or_default()
        );
        for _ in 0..300 {
            if self.client(&["ping"]).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "fail2ban-server in {} did not answer; its log:\n{}",
            self.dir.display(),
            std::fs::read_to_string(self.dir.join("f2b.log")).unwrap_or_default()
        );
    }

    /// Runs `fail2ban-client` against this server; `None` when it fails.
    pub fn client(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("fail2ban-client")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The addresses currently banned in `jail`.
    pub fn banned(&self, jail: &str) -> Vec<String> {
        self.client(&["get", jail, "banip"])
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Appends lines to a log file in the sandbox (created if missing).
    pub fn append_log(&self, name: &str, lines: &[String]) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(name))
            .unwrap();
        for line in lines {
            writeln!(f, "{line}").unwrap();
        }
    }

    /// The server's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("f2b.log")).unwrap_or_default()
    }

    /// Stops the server and waits until its socket is gone.
    pub fn stop(&self) {
        if self.client(&["stop"]).is_none()
            && let Ok(pid) = std::fs::read_to_string(self.dir.join("f2b.pid"))
        {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        for _ in 0..250 {
            if !self.socket.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Fail2Ban {
    fn drop(&mut self) {
        self.stop();
    }
}
