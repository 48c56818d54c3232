//! `import-legacy` figures: the original's `f2b` table of 1,850,000 rows (Durham's size) into
//! a MariaDB archive, beside reading and converting the same rows with nothing written
//! (`--dry-run`, the ceiling of the reading side) in the same run; and the second import that
//! finds everything archived.

use crate::report::Report;
use shared_f2b_tests::db::{TestDb, mariadb_root};
use shared_f2b_tests::{HostConfig, bin, unique};
use std::path::Path;
use std::time::Instant;

/// Runs the benchmark with `rows` rows in the legacy table.
pub fn run(report: &mut Report, rows: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = TestDb::mariadb();
    let name = source.mariadb.clone().expect("a MariaDB database");
    fill(&name, rows);
    let archive = TestDb::mariadb();
    let cfg = HostConfig::archiver(
        dir.path(),
        "nats://127.0.0.1:4222",
        &unique("bleg"),
        &unique("BLEG"),
        &archive.url,
    );
    let dry = import(&cfg.path, &source.url, true);
    let first = import(&cfg.path, &source.url, false);
    let again = import(&cfg.path, &source.url, false);
    let target = "<= 60 s for 1,850,000 rows";
    report
        .add(
            &format!("import-legacy of {rows} rows into MariaDB"),
            first,
            "s",
            target,
        )
        .reference = Some(("the same rows read and converted (--dry-run) s".into(), dry));
    report.add(
        "import-legacy again (everything archived already)",
        again,
        "s",
        "",
    );
    report.add(
        "import-legacy rows per second",
        rows as f64 / first,
        "rows/s",
        ">= 30,833 rows/s",
    );
}

/// Fills the original's table with `rows` rows like Durham's: 150 hosts writing FQDNs, local
/// times over five years, a few jails, 166,000 addresses, an IPv6 one in 50.
fn fill(name: &str, rows: usize) {
    mariadb_root(&format!(
        "USE {name}; CREATE TABLE f2b (id bigint NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         hostname varchar(255) DEFAULT NULL, created datetime DEFAULT NULL, jail text, \
         protocol varchar(16) DEFAULT NULL, port varchar(32) DEFAULT NULL, \
         ip varchar(64) DEFAULT NULL, bantime varchar(32) DEFAULT '900', \
         KEY hostname (hostname, ip)); \
         INSERT INTO f2b (hostname, created, jail, protocol, port, ip, bantime) \
         SELECT CONCAT('node', seq % 150, '.example.ac.uk'), \
           TIMESTAMPADD(SECOND, seq * 85, '2020-06-01 00:00:00'), \
           ELT(1 + seq % 3, 'SSH', 'sshd', 'apache-auth'), 'tcp', \
           ELT(1 + seq % 3, 'ssh', '22', 'http,https'), \
           IF(seq % 50 = 0, CONCAT('2001:db8::', HEX(seq % 166052)), \
              CONCAT('10.', (seq % 166052) DIV 65536, '.', ((seq % 166052) DIV 256) % 256, \
                     '.', seq % 256)), \
           ELT(1 + seq % 4, '900', '3600', '86400', '-1') \
         FROM seq_1_to_{rows};"
    ));
}

/// Seconds one `import-legacy` takes.
fn import(config: &Path, from: &str, dry_run: bool) -> f64 {
    let mut cmd = std::process::Command::new(bin("shared-f2b-archiver"));
    cmd.arg("--config").arg(config).args([
        "import-legacy",
        "--from",
        from,
        "--timezone",
        "Europe/London",
    ]);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let t0 = Instant::now();
    let out = cmd.output().expect("shared-f2b-archiver runs");
    let took = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    took
}
