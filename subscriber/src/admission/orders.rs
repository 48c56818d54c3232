//! The operators' orders as admission decides them: a control event is checked against its
//! subject, taken into the standing orders (known, revoked, new), then enacted: a pardon or
//! allow lifts what it covers, an operator's ban is admitted like a remote ban from every host's
//! view.

use super::{Admission, Decision, Reason, drop};
use crate::intake::follow::Incoming;
use crate::state::State;
use shared_f2b::control::{Control, ControlKind, host_net as host};
use shared_f2b::event::{Action, Event};
use shared_f2b::inbound::decode_control;
use shared_f2b::keyring::Taken;
use shared_f2b::signing::SigError;
use shared_f2b::standing::Change;
use std::time::SystemTime;

/// Who holds an operator's ban in the holdings: a name with a space, which no host's origin
/// can have, so no host's unban can lift it.
pub fn operator_holder(operator: &str) -> String {
    format!("operator {operator}")
}

/// The event an order is applied as: `origin` its holder, at the order's address (or its net's
/// first), with the order's id and time.
pub(super) fn order_event(
    control: &Control,
    origin: String,
    jail: &str,
    action: Action,
    bantime: i64,
) -> Event {
    Event {
        v: control.v,
        id: control.id,
        origin,
        jail: jail.into(),
        ip: control
            .net
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |n| n.addr()),
        action,
        time: control.time,
        bantime,
        failures: 0,
        key: None,
        sig: None,
        site: None,
        port: None,
        protocol: None,
    }
}

/// What taking key record `control` into a keyring decided (`of`: whose keyring, for the log).
/// A record is never taken without a trusted operator's signature, whatever
/// `require_signatures` says.
pub(super) fn keyed(taken: Result<Taken, SigError>, control: Control, of: &str) -> Decision {
    match taken {
        Ok(Taken::New) => Decision::Keyed {
            control: Box::new(control),
        },
        Ok(Taken::Known) => drop(
            Reason::Replayed,
            format!("key record {}{of} is known already", control.id),
        ),
        Err(e) => drop(
            Reason::Signature(e),
            format!(
                "key record {}{of} by {:?}: {e}",
                control.id, control.operator
            ),
        ),
    }
}

impl Admission {
    /// An operator's control event: recorded in the standing orders, then enacted.
    pub(super) fn order(&mut self, msg: &Incoming, state: &mut State, now: SystemTime) -> Decision {
        let control = match decode_control(&self.prefix, &msg.subject, &msg.payload) {
            Ok(control) => control,
            Err(r) if r.reason == "spoofed_origin" => return drop(Reason::SpoofedOrigin, r.detail),
            Err(r) => return drop(Reason::Invalid(r.reason), r.detail),
        };
        if control.kind == ControlKind::Key {
            let taken = state.keyring.take(&control, &self.operators);
            if matches!(taken, Ok(Taken::New)) {
                state.keyring_changed();
            }
            return keyed(taken, control, "");
        }
        if matches!(control.kind, ControlKind::Intel | ControlKind::Unlist) {
            return self.intel(control, state, now);
        }
        if let Some(refused) = self.order_signature(&control) {
            return refused;
        }
        self.enact(msg, control, state, now)
    }

    /// An order whose signature is settled: recorded in the standing orders, then enacted.
    pub(super) fn enact(
        &mut self,
        msg: &Incoming,
        control: Control,
        state: &mut State,
        now: SystemTime,
    ) -> Decision {
        if control.kind != ControlKind::Revoke && !control.in_force_at(now) {
            return drop(Reason::Expired, format!("order {} has ended", control.id));
        }
        match state.standing.take(msg.seq.unwrap_or(0), &control) {
            Change::Known => drop(
                Reason::Replayed,
                format!("order {} is known already", control.id),
            ),
            Change::Nothing => drop(
                Reason::RevokesNothing,
                format!("{:?} is not an order in force", control.revokes),
            ),
            Change::Ended(ended) => {
                state.standing_changed();
                Decision::Ended {
                    control: Box::new(control),
                    ended,
                }
            }
            Change::Added => {
                state.standing_changed();
                match (control.kind, control.net) {
                    (ControlKind::Ban, _) => self.operator_ban(control, state, now),
                    (ControlKind::Intel | ControlKind::Unlist, _) => drop(
                        Reason::Invalid("bad_control"),
                        "an intel order is not a standing order",
                    ),
                    (_, Some(net)) => {
                        if let Some(rules) = self.escalation.as_mut() {
                            rules.pardon(net);
                        }
                        let held = state.lift(net);
                        Decision::Lift {
                            net,
                            held,
                            control: Box::new(control),
                        }
                    }
                    (_, None) => drop(Reason::Invalid("bad_control"), "an order without a net"),
                }
            }
        }
    }

    /// An operator's ban: applied like a remote ban from every host's view, into the target
    /// jail, with the order's bantime (capped at `max_bantime`).
    fn operator_ban(&mut self, control: Control, state: &mut State, now: SystemTime) -> Decision {
        let Some(ip) = control.ban_ip() else {
            return drop(Reason::Invalid("bad_control"), "a ban without an address");
        };
        if let Some(refused) = self.never_banned(host(ip), state, now) {
            return refused;
        }
        let cap = now + self.max_bantime;
        let until = control.until.map_or(cap, |u| u.min(cap));
        let left = until.duration_since(now).unwrap_or_default();
        let bantime = (left.as_secs_f64().ceil() as u64).max(1);
        let holder = operator_holder(&control.operator);
        state.ban(&self.target_jail, host(ip), &holder, Some(until));
        let event = order_event(&control, holder, "operator", Action::Ban, bantime as i64);
        Decision::Ban {
            jail: self.target_jail.clone(),
            event,
            target: host(ip),
            bantime: Some(bantime as i64),
            escalated: None,
            aggregate: None,
        }
    }
}
