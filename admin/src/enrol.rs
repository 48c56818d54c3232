//! `host add`, `remove`, `rotate`, `list`, `prune` and `operator-key`: hosts enrolled with
//! keys of their own, without hand-editing the nats-server config.
//!
//! Each change goes in this order: the key record, signed by the operator's key, is published
//! first (so every subscriber knows a key before it can sign anything, and knows it ended before
//! nats-server stops taking it); then the host's files; then the registry and the hosts file;
//! then nats-server is told to reload, which also closes the connections of users no longer in
//! the file.

use crate::cli::HostCommand;
use crate::error::AdminError;
use crate::hosts::{self, Host, Key, Registry};
use crate::publish;
use shared_f2b::Config;
use shared_f2b::control::Control;
use shared_f2b::event::validate_host;
use shared_f2b::signing::Signer;
use shared_f2b::subject::encode_token;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The operator's signing key (`[trust] operator_seed_file`), which every order carries.
pub fn operator_signer(config: &Config) -> Result<Option<Signer>, AdminError> {
    match &config.trust.operator_seed_file {
        Some(path) => Ok(Some(Signer::from_file(path)?)),
        None => Ok(None),
    }
}

fn required_signer(config: &Config) -> Result<Signer, AdminError> {
    operator_signer(config)?.ok_or(AdminError::NoOperatorKey)
}

/// Runs one `host` command.
pub async fn run(config: &Config, command: HostCommand) -> Result<(), AdminError> {
    match command {
        HostCommand::List { json } => list(config, json),
        HostCommand::Add {
            name,
            out,
            seed_path,
            print_seed,
            sensor,
        } => {
            let paths = (out.as_path(), seed_path.as_deref());
            add(config, &name, paths, print_seed, sensor).await
        }
        HostCommand::Remove { name } => remove(config, &name).await,
        HostCommand::Rotate {
            name,
            grace,
            out,
            seed_path,
            print_seed,
        } => rotate(config, &name, grace, &out, seed_path.as_deref(), print_seed).await,
        HostCommand::Prune => prune(config),
    }
}

/// `operator-key`: a new operator key pair; the seed goes to `out` (0600), the public key is
/// printed for `[trust] operator_keys`.
pub fn operator_key(out: &Path) -> Result<(), AdminError> {
    let signer = Signer::generate();
    write_new(out, format!("{}\n", signer.seed()).as_bytes(), 0o600)?;
    println!("{}", signer.public_key());
    eprintln!(
        "operator seed written to {} (mode 0600); put the public key above in every host's \
         [trust] operator_keys and this file in your [trust] operator_seed_file",
        out.display()
    );
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AdminError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| hosts::HostsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    Ok(())
}

fn check_name(name: &str) -> Result<(), AdminError> {
    validate_host(name).map_err(|e| AdminError::BadHost(e.to_string()))?;
    encode_token(name).map_err(|e| AdminError::BadHost(e.to_string()))?;
    if name.starts_with("operator ") || name.contains(' ') {
        return Err(AdminError::BadHost(format!("{name:?}: no spaces")));
    }
    Ok(())
}

/// Publishes a key record signed by `signer`; prints nothing.
async fn publish_record(
    config: &Config,
    signer: &Signer,
    record: &mut Control,
) -> Result<(), AdminError> {
    signer.sign_control(record);
    let conn = crate::commands::connect(config).await?;
    publish::publish(&conn, &config.nats, record, config.publisher.timeout)
        .await
        .map_err(|e| crate::commands::refused(config, e))?;
    Ok(())
}

fn save_and_reload(config: &Config, registry: &Registry) -> Result<(), AdminError> {
    let admin = &config.admin;
    registry.save(
        &admin.hosts_file,
        &config.nats.subject_prefix,
        admin.legacy_hosts_file.as_deref(),
        SystemTime::now(),
    )?;
    hosts::reload(&admin.reload_command, &admin.hosts_file)?;
    Ok(())
}

/// The host's seed and config, written to `out`.
fn write_host_files(
    config: &Config,
    signer: &Signer,
    name: &str,
    host: &Signer,
    out: &Path,
    seed_path: Option<&Path>,
    (replace, sensor): (bool, bool),
) -> Result<(PathBuf, PathBuf), AdminError> {
    std::fs::create_dir_all(out).map_err(|source| hosts::HostsError::Write {
        path: out.to_owned(),
        source,
    })?;
    let out = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_owned());
    let seed_file = out.join(format!("{name}.seed"));
    let config_file = out.join(format!("{name}.toml"));
    let seed = format!("{}\n", host.seed());
    if replace {
        hosts::write_atomically(&seed_file, seed.as_bytes(), 0o600)?;
    } else {
        write_new(&seed_file, seed.as_bytes(), 0o600)?;
    }
    let url = config
        .admin
        .host_nats_url
        .clone()
        .or_else(|| config.nats.servers.first().cloned())
        .unwrap_or_default();
    let mut operators = config.trust.operator_keys.clone();
    if !operators.iter().any(|k| k == signer.public_key()) {
        operators.insert(0, signer.public_key().to_owned());
    }
    let token = encode_token(name).expect("checked");
    let seed_in_config = seed_path.unwrap_or(&seed_file);
    let text = format!(
        "# shared-f2b config of host {name:?}, written by `shared-f2b-admin host`.\n\
         # Its key ({public}) logs it in to NATS and signs its events.\n\
         host_id = {name:?}\n\n\
         [nats]\n\
         servers = [{url:?}]\n\
         subject_prefix = {prefix:?}\n\
         stream = {stream:?}\n\
         inbox_prefix = \"_INBOX_{token}\"\n\
         nkey_seed_file = {seed:?}\n\n\
         [trust]\n\
         operator_keys = {operators:?}\n\n\
         [subscriber]\n\
         require_signatures = true\n{publisher}",
        publisher = if sensor {
            "\n[publisher]\n\
             # A sensor runs no subscriber daemon, which is what asks the archive to confirm\n\
             # published events; so none are kept for it.\n\
             confirm = false\n"
        } else {
            ""
        },
        public = host.public_key(),
        prefix = config.nats.subject_prefix,
        stream = config.nats.stream,
        seed = seed_in_config.display().to_string(),
    );
    if replace {
        hosts::write_atomically(&config_file, text.as_bytes(), 0o640)?;
    } else {
        write_new(&config_file, text.as_bytes(), 0o640)?;
    }
    Ok((seed_file, config_file))
}

async fn add(
    config: &Config,
    name: &str,
    (out, seed_path): (&Path, Option<&Path>),
    print_seed: bool,
    sensor: bool,
) -> Result<(), AdminError> {
    check_name(name)?;
    let signer = required_signer(config)?;
    let now = SystemTime::now();
    let mut registry = Registry::load(&config.admin.hosts_file)?;
    registry.prune(now);
    if registry.get(name).is_some() {
        return Err(AdminError::HostExists(name.to_owned()));
    }
    for file in [format!("{name}.seed"), format!("{name}.toml")] {
        if out.join(&file).exists() {
            return Err(AdminError::FileExists(out.join(file)));
        }
    }
    let host = Signer::generate();
    let mut record = Control::key_record(
        &config.host_id,
        name,
        host.public_key(),
        now,
        None,
        "host add",
    )?;
    publish_record(config, &signer, &mut record).await?;
    let (seed_file, config_file) = write_host_files(
        config,
        &signer,
        name,
        &host,
        out,
        seed_path,
        (false, sensor),
    )?;
    registry.hosts.push(Host {
        name: name.to_owned(),
        keys: vec![Key {
            key: host.public_key().to_owned(),
            since: now,
            until: None,
        }],
        sensor,
    });
    save_and_reload(config, &registry)?;
    println!(
        "{} {name} added: key {} (record {}); seed {} (mode 0600), config {}; nats-server reloaded",
        if sensor { "sensor" } else { "host" },
        host.public_key(),
        record.id,
        seed_file.display(),
        config_file.display()
    );
    if print_seed {
        println!("{}", host.seed());
    }
    Ok(())
}

async fn remove(config: &Config, name: &str) -> Result<(), AdminError> {
    check_name(name)?;
    let signer = required_signer(config)?;
    let now = SystemTime::now();
    let mut registry = Registry::load(&config.admin.hosts_file)?;
    let host = registry
        .get(name)
        .cloned()
        .ok_or_else(|| AdminError::NoSuchHost(name.to_owned()))?;
    for key in &host.keys {
        let mut record = Control::key_record(
            &config.host_id,
            name,
            &key.key,
            key.since,
            Some(now),
            "host remove",
        )?;
        publish_record(config, &signer, &mut record).await?;
    }
    registry.hosts.retain(|h| h.name != name);
    save_and_reload(config, &registry)?;
    println!(
        "host {name} removed: {} key(s) ended now; nats-server reloaded (its connections are closed)",
        host.keys.len()
    );
    Ok(())
}

async fn rotate(
    config: &Config,
    name: &str,
    grace: Duration,
    out: &Path,
    seed_path: Option<&Path>,
    print_seed: bool,
) -> Result<(), AdminError> {
    check_name(name)?;
    let signer = required_signer(config)?;
    let now = SystemTime::now();
    let end = now + grace;
    let mut registry = Registry::load(&config.admin.hosts_file)?;
    registry.prune(now);
    let old: Vec<Key> = registry
        .get(name)
        .ok_or_else(|| AdminError::NoSuchHost(name.to_owned()))?
        .keys
        .clone();
    let host = Signer::generate();
    let mut record = Control::key_record(
        &config.host_id,
        name,
        host.public_key(),
        now,
        None,
        "host rotate: new key",
    )?;
    publish_record(config, &signer, &mut record).await?;
    for key in old.iter().filter(|k| k.until.is_none_or(|u| u > end)) {
        let mut ended = Control::key_record(
            &config.host_id,
            name,
            &key.key,
            key.since,
            Some(end),
            "host rotate: old key, after its grace",
        )?;
        publish_record(config, &signer, &mut ended).await?;
    }
    let sensor = registry.get(name).is_some_and(|h| h.sensor);
    let (seed_file, config_file) =
        write_host_files(config, &signer, name, &host, out, seed_path, (true, sensor))?;
    let entry = registry.get_mut(name).expect("looked up above");
    for key in &mut entry.keys {
        key.until = Some(key.until.map_or(end, |u| u.min(end)));
    }
    entry.keys.push(Key {
        key: host.public_key().to_owned(),
        since: now,
        until: None,
    });
    save_and_reload(config, &registry)?;
    println!(
        "host {name} rotated: new key {}; seed {}, config {}; the old key stops at {} \
         (its NATS login goes with `shared-f2b-admin host prune` after that)",
        host.public_key(),
        seed_file.display(),
        config_file.display(),
        humantime::format_rfc3339_seconds(end)
    );
    if print_seed {
        println!("{}", host.seed());
    }
    Ok(())
}

fn prune(config: &Config) -> Result<(), AdminError> {
    let mut registry = Registry::load(&config.admin.hosts_file)?;
    if registry.prune(SystemTime::now()) {
        save_and_reload(config, &registry)?;
        println!("keys past their grace removed; nats-server reloaded");
    } else {
        println!("nothing to prune");
    }
    Ok(())
}

fn list(config: &Config, json: bool) -> Result<(), AdminError> {
    let registry = Registry::load(&config.admin.hosts_file)?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&registry).expect("a registry serialises")
        );
        return Ok(());
    }
    println!("{:<32} {:<56} {:<20} UNTIL", "HOST", "KEY", "SINCE");
    for host in &registry.hosts {
        for key in &host.keys {
            println!(
                "{:<32} {:<56} {:<20} {}",
                host.name,
                key.key,
                humantime::format_rfc3339_seconds(key.since).to_string(),
                key.until
                    .map_or("-".to_owned(), |u| humantime::format_rfc3339_seconds(u)
                        .to_string())
            );
        }
    }
    Ok(())
}
