//! Intel orders as admission decides them: what an intake source (`[[archiver.intake]]`: MISP,
//! a blocklist) lists is banned here only with `[subscriber] intel = "ban"` and the source in
//! `intel_sources`, signed as `[trust]` wants (an operator's key or an `intel_keys` key, which
//! counts for nothing else), never over what is never banned (protected, NATS servers, the
//! allowlist, an operator's pardon or allow, addresses that are not global), never as a net
//! wider than [`WIDEST_V4`] / [`WIDEST_V6`], for at most the source's bantime cap; an `unlist`
//! lifts what that source's orders placed and nothing another origin holds.

use super::orders::order_event;
use super::{Admission, Decision, Reason, drop};
use crate::state::State;
use crate::state::holdings::Unbanned;
use shared_f2b::control::{Control, ControlKind, is_global_net};
use shared_f2b::event::Action;
use std::time::SystemTime;

/// The widest nets an intel order may ban here, whatever the archiver's `max_prefix` allowed.
pub const WIDEST_V4: u8 = 16;
pub const WIDEST_V6: u8 = 32;

/// Intel bantimes are whole multiples of this many seconds: the orders of one round then
/// share a bantime, and Fail2Ban takes a batch of them in one `banip` (a ticket bantime is a
/// jail bantime set and put back around it).
const BANTIME_STEP: u64 = 60;

/// The jail name intel orders carry in logs and the replay guard.
pub const INTEL_JAIL: &str = "intel";

/// Who holds an intel ban in the holdings: a name with a space, which no host's origin can
/// have, so no host's unban can lift it.
pub fn intel_holder(source: &str) -> String {
    format!("intel {source}")
}

impl Admission {
    /// An intel or unlist order whose subject and payload agree (not yet its signature).
    pub(super) fn intel(
        &mut self,
        control: Control,
        state: &mut State,
        now: SystemTime,
    ) -> Decision {
        let source = control.operator.clone();
        let off = || {
            drop(
                Reason::IntelOff,
                format!("source {source:?} is not applied here"),
            )
        };
        // An unlist is taken whatever `intel` says now: it lifts only what the source placed
        // here (while intel was on), and nothing else.
        let cap = self.intel_cap(&source);
        if cap.is_none() && control.kind == ControlKind::Intel {
            return off();
        }
        if let Some(refused) = self.intel_signature(&control) {
            return refused;
        }
        let Some(net) = control.net else {
            return drop(
                Reason::Invalid("bad_control"),
                "an intel order without a net",
            );
        };
        let widest = if net.addr().is_ipv4() {
            WIDEST_V4
        } else {
            WIDEST_V6
        };
        if net.prefix_len() < widest {
            return drop(Reason::TooWide, format!("{net} is wider than /{widest}"));
        }
        let holder = intel_holder(&source);
        // One guard key per net (its address and its length): a /24 and the /32 at its start
        // are told apart.
        let guard_jail = format!("{INTEL_JAIL}/{}", net.prefix_len());
        if !state
            .guard
            .is_new(&holder, &guard_jail, net.addr(), control.id)
        {
            return drop(
                Reason::Replayed,
                format!("order {} is not newer than one applied", control.id),
            );
        }
        let event =
            |action, bantime| order_event(&control, holder.clone(), INTEL_JAIL, action, bantime);
        let jail = self.target_jail.clone();
        if control.kind == ControlKind::Unlist {
            state.note(&holder, &guard_jail, net.addr(), control.id);
            return match state.unban(&jail, net, &holder) {
                Unbanned::Lift => Decision::Unban {
                    jail,
                    target: net,
                    event: event(Action::Unban, 0),
                },
                Unbanned::HeldByOthers => drop(Reason::HeldByOthers, ""),
                Unbanned::NotHeld => drop(Reason::NotHeld, ""),
            };
        }
        let Some(cap) = cap else {
            return off();
        };
        if !control.in_force_at(now) {
            return drop(Reason::Expired, format!("order {} has ended", control.id));
        }
        if !is_global_net(&net) {
            return drop(
                Reason::Protected,
                format!("{net} holds addresses that are not global"),
            );
        }
        if let Some(refused) = self.never_banned(net, state, now) {
            return refused;
        }
        let until = control.until.map_or(now + cap, |u| u.min(now + cap));
        let left = until.duration_since(now).unwrap_or_default().as_secs();
        let bantime = ((left / BANTIME_STEP) * BANTIME_STEP).max(BANTIME_STEP) as i64;
        state.ban(&jail, net, &holder, Some(until));
        state.note(&holder, &guard_jail, net.addr(), control.id);
        Decision::Ban {
            jail,
            event: event(Action::Ban, bantime),
            target: net,
            bantime: Some(bantime),
            escalated: None,
            aggregate: None,
        }
    }
}
