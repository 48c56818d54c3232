//! `ban` / `unban`: turn the ticket Fail2Ban hands over into one event, then send or spool it.

use crate::cli::EventArgs;
use crate::outcome::Outcome;
use shared_f2b::Config;
use shared_f2b::event::{self, Action, Event, PERMANENT};
use shared_f2b::nats::{self, Lifetime};
use shared_f2b::publish::{SendError, Sender};
use shared_f2b::signing::Signer;
use shared_f2b::spool::Spool;
use shared_f2b::standing::{self, Standing};
use std::time::{Duration, Instant, SystemTime};

/// Fail2Ban's own default bantime, used when `--bantime` is not given for a ban.
const DEFAULT_BANTIME: i64 = 600;

/// Validates the ticket, applies the skip rules, and publishes (or spools) the event.
pub async fn run(config: &Config, action: Action, args: &EventArgs) -> Outcome {
    let mut event = match build_event(config, action, args) {
        Ok(Some(event)) => event,
        Ok(None) => return Outcome::Done,
        Err(why) => return Outcome::Usage(why.to_string()),
    };
    // Signed with the key that logs this host in (or `[trust] seed_file`): the event proves
    // who made it, whatever broker it crosses.
    if let Some(seed) = config.trust.signing_seed(&config.nats) {
        match Signer::from_file(seed) {
            Ok(signer) => signer.sign_event(&mut event),
            Err(e) => return Outcome::Failed(format!("cannot sign the event: {e}")),
        }
    }
    let spool = Spool::new(&config.publisher.spool_dir).confirming(config.publisher.confirm);
    // Recorded before it is sent, kept until the archive holds it (`confirm`): a stream that
    // loses it after its ack, or a publisher killed before the send, cannot lose it for good.
    if let Some(waiting) = spool.unconfirmed()
        && let Err(e) = waiting.put(&event)
    {
        tracing::warn!(dir = %waiting.dir().display(), error = %e,
            "cannot keep the event until the archive confirms it; sending it anyway");
    }
    let timeout = config.publisher.timeout;
    let conn = match nats::connect(&config.nats, &config.host_id, timeout, Lifetime::OneShot).await
    {
        Ok(conn) => conn,
        Err(e) => return keep(&spool, &event, &e.to_string()),
    };
    let sender = Sender::new(&conn, &config.nats, timeout);

    // Older spooled events go first so that a ban and its unban keep their order.
    let deadline = Instant::now() + config.publisher.spool_send_limit;
    match spool.drain(&sender, deadline).await {
        Ok(report) if report.remaining > 0 => {
            return keep(
                &spool,
                &event,
                &format!("{} older events still spooled", report.remaining),
            );
        }
        Ok(report) if report.sent > 0 => tracing::info!(sent = report.sent, "sent spooled events"),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(spool = %spool.dir().display(), error = %e, "cannot read the spool")
        }
    }

    match sender.send(&event).await {
        Ok(()) => {
            tracing::info!(id = %event.id, jail = %event.jail, ip = %event.ip,
                action = action.as_str(), "published");
            Outcome::Done
        }
        Err(SendError::Refused(reason)) => {
            if let Some(waiting) = spool.unconfirmed() {
                waiting.remove(event.id);
            }
            Outcome::Failed(format!(
                "NATS refused {} of {} in jail {}: {reason}; check this host's publish permissions \
             (host_id {:?})",
                action.as_str(),
                event.ip,
                event.jail,
                config.host_id
            ))
        }
        Err(e) => keep(&spool, &event, &e.to_string()),
    }
}

/// Builds the event, or `None` when the ticket is one that must not be published.
fn build_event(
    config: &Config,
    action: Action,
    args: &EventArgs,
) -> Result<Option<Event>, event::EventError> {
    let ip = event::parse_ip(&args.ip)?;
    event::validate_jail(&args.jail)?;
    let time = match &args.time {
        Some(text) => event::parse_epoch(text)?,
        None => SystemTime::now(),
    };
    if let Some(bantime) = args.bantime {
        event::validate_bantime(bantime)?;
    }
    if args.restored == 1 {
        tracing::info!(jail = %args.jail, %ip, "skipped: ban restored by Fail2Ban at start-up");
        return Ok(None);
    }
    if config.subscriber.is_target_jail(&args.jail) {
        tracing::info!(jail = %args.jail, %ip,
            "skipped: this jail receives remote bans, so its bans are never re-published");
        return Ok(None);
    }
    if action == Action::Ban
        && let Some(why) = shielded(config, ip)
    {
        tracing::info!(jail = %args.jail, %ip, order = %why,
            "skipped: an operator pardoned or allowed this address");
        return Ok(None);
    }
    if action == Action::Unban && expired_naturally(time, args.bantime) {
        tracing::info!(jail = %args.jail, %ip, "skipped: unban at the natural end of the ban");
        return Ok(None);
    }
    let bantime = args.bantime.unwrap_or(DEFAULT_BANTIME);
    let mut event = Event::new(
        action,
        &config.host_id,
        &args.jail,
        ip,
        time,
        bantime,
        args.failures,
    )?;
    // The ports are for people: a jail's odd port text must not cost its ban.
    if let Err(e) = event.set_ports(given(&args.port), given(&args.protocol)) {
        tracing::warn!("port/protocol not sent with the event: {e}");
    }
    Ok(Some(event))
}

/// A tag's value, or `None` when Fail2Ban left it unresolved (`<port>`) or empty.
fn given(tag: &Option<String>) -> Option<&str> {
    tag.as_deref()
        .filter(|t| !(t.starts_with('<') && t.ends_with('>')))
}

/// The operator's pardon or allow in force that covers `ip`, as the subscriber on this host
/// last wrote them (`<state_dir>/controls.json`; no file, no orders). A file that cannot be
/// read does not stop the ban from being published.
fn shielded(config: &Config, ip: std::net::IpAddr) -> Option<String> {
    let path = standing::path(&config.subscriber.state_dir);
    let standing = match Standing::load(&path) {
        Ok(standing) => standing,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e,
                "cannot read the operators' orders; publishing anyway");
            return None;
        }
    };
    let order = standing.shield(ip, SystemTime::now())?;
    Some(format!(
        "{} {} by {:?}: {:?}",
        order.kind.as_str(),
        order.id,
        order.operator,
        order.reason
    ))
}

/// An unban is natural when the ban had run its course; without a bantime it is a manual one.
fn expired_naturally(time: SystemTime, bantime: Option<i64>) -> bool {
    match bantime {
        Some(secs) if secs != PERMANENT => {
            time + Duration::from_secs(secs.max(0) as u64) <= SystemTime::now()
        }
        _ => false,
    }
}

/// Keeps the event in the spool for a later run or the subscriber daemon (its record of a
/// sent event goes: the spool sends it, and records it then).
fn keep(spool: &Spool, event: &Event, why: &str) -> Outcome {
    match spool.put(event) {
        Ok(path) => {
            if let Some(waiting) = spool.unconfirmed() {
                waiting.remove(event.id);
            }
            tracing::warn!(id = %event.id, ip = %event.ip, reason = why, spooled = %path.display(),
                "not sent now; spooled for later");
            Outcome::Done
        }
        Err(e) => Outcome::Failed(format!(
            "could not send {} of {} ({why}) and could not spool it in {}: {e}",
            event.action.as_str(),
            event.ip,
            spool.dir().display()
        )),
    }
}
