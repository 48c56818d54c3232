//! Running one command: build the order, connect as the config's operator, publish or ask the
//! archiver, print the outcome.

use crate::archive;
use crate::cli::Command;
use crate::error::AdminError;
use crate::order::Order;
use crate::publish::{self, PublishError, refused_publish};
use crate::table;
use shared_f2b::Config;
use shared_f2b::control::{Control, ControlKind};
use shared_f2b::nats::{self, Connection, Lifetime};

/// Runs `command` with `config`'s NATS settings, as operator `config.host_id`.
pub async fn run(config: &Config, command: Command) -> Result<(), AdminError> {
    let order = match command {
        Command::List { json } => return list(config, json).await,
        Command::Host { command } => return crate::enrol::run(config, command).await,
        Command::OperatorKey { out } => return crate::enrol::operator_key(&out),
        Command::Pardon { ip, lasts, reason } => Order::Pardon {
            net: ip,
            lasts,
            reason,
        },
        Command::Allow { net, lasts, reason } => Order::Allow { net, lasts, reason },
        Command::Revoke { id, reason } => Order::Revoke { id, reason },
        Command::Ban {
            ip,
            bantime,
            reason,
        } => Order::Ban {
            ip,
            bantime,
            reason,
        },
    };
    // Checked before connecting: bad input publishes nothing.
    let mut control = order.control(&config.host_id)?;
    if let Some(signer) = crate::enrol::operator_signer(config)? {
        signer.sign_control(&mut control);
    }
    let conn = connect(config).await?;
    if let Some(id) = control.revokes {
        check_revocable(config, &conn, id).await?;
    }
    let timeout = config.publisher.timeout;
    let stored = publish::publish(&conn, &config.nats, &control, timeout)
        .await
        .map_err(|e| refused(config, e))?;
    println!(
        "{} {} published (stream seq {}{}): {}",
        control.kind.as_str(),
        control.id,
        stored.seq,
        if stored.duplicate { ", duplicate" } else { "" },
        summary(&control)
    );
    Ok(())
}

pub async fn connect(config: &Config) -> Result<Connection, AdminError> {
    let timeout = config.publisher.timeout;
    Ok(nats::connect(&config.nats, &config.host_id, timeout, Lifetime::OneShot).await?)
}

/// Who this config connects as, for messages.
fn who(config: &Config) -> String {
    match &config.nats.user {
        Some(user) => format!("NATS user {user:?}"),
        None => format!("the NATS identity of host_id {:?}", config.host_id),
    }
}

/// A refusal names the user and what to do about it.
pub fn refused(config: &Config, e: PublishError) -> AdminError {
    match e {
        PublishError::Refused(reason) if refused_publish(&reason) => AdminError::NotOperator {
            who: who(config),
            reason,
        },
        PublishError::Refused(reason) => AdminError::Refused {
            who: who(config),
            reason,
        },
        other => other.into(),
    }
}

/// What the order says, in one line.
pub fn summary(c: &Control) -> String {
    let net = match c.ban_ip() {
        Some(ip) => ip.to_string(),
        None => c.net.map_or_else(String::new, |n| n.to_string()),
    };
    let what = match c.kind {
        ControlKind::Pardon => format!("{net} pardoned {}", ends(c)),
        ControlKind::Allow => format!("{net} allowed {}", ends(c)),
        ControlKind::Ban => format!("{net} banned {}", ends(c)),
        ControlKind::Key => format!(
            "key {} of host {} from {} {}",
            c.host_key.as_deref().unwrap_or("-"),
            c.host.as_deref().unwrap_or("-"),
            c.since
                .map_or("-".to_owned(), |s| humantime::format_rfc3339_seconds(s)
                    .to_string()),
            ends(c)
        ),
        ControlKind::Intel => format!("{net} listed by source {} {}", c.operator, ends(c)),
        ControlKind::Unlist => format!("{net} no longer listed by source {}", c.operator),
        ControlKind::Revoke => format!(
            "{} ends now",
            c.revokes.map(|id| id.to_string()).unwrap_or_default()
        ),
    };
    format!("{what}; reason {}", table::escaped(&c.reason))
}

/// How long an order lasts, as the report says it.
fn ends(c: &Control) -> String {
    match (c.until, c.kind) {
        (Some(_), _) => format!("until {}", table::until(c)),
        (None, ControlKind::Ban) => "permanently".to_owned(),
        (None, _) => "until revoked".to_owned(),
    }
}

/// A revoke is published only for a pardon or allow the archiver has in force.
async fn check_revocable(
    config: &Config,
    conn: &Connection,
    id: uuid::Uuid,
) -> Result<(), AdminError> {
    let timeout = config.publisher.timeout;
    let in_force = archive::in_force(&conn.client, &config.nats.subject_prefix, timeout).await?;
    let what = match in_force.iter().find(|r| r.control.id == id) {
        Some(r) if r.control.shields() => return Ok(()),
        Some(r) => format!(
            "an operator {} (it ends with its bantime; only pardons and allows are revoked)",
            r.control.kind.as_str()
        ),
        None => "not a pardon or allow in force (unknown, ended, revoked already, or not archived \
                 yet; see shared-f2b-admin list)"
            .to_owned(),
    };
    Err(AdminError::NotRevocable { id, what })
}

/// `list`: what is in force, from the archiver.
async fn list(config: &Config, json: bool) -> Result<(), AdminError> {
    let conn = connect(config).await?;
    let timeout = config.publisher.timeout;
    let controls = archive::in_force(&conn.client, &config.nats.subject_prefix, timeout).await?;
    if json {
        println!("{}", table::json(&controls));
    } else {
        print!("{}", table::render(&controls));
    }
    Ok(())
}
