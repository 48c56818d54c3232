//! A batch's decisions folded into what to apply: the bans, unbans and lifts that are its net
//! effect. Pure: [`crate::worker`] logs and counts each decision, then hands the fold to Fail2Ban.
//!
//! Per local jail and target the last word wins: a later unban replaces an earlier ban and a
//! later ban an earlier unban (bans are planned before unbans, so both cannot go). An
//! operator's lift takes out every planned ban it covers.

use crate::admission::Decision;
use crate::apply::PlannedBan;
use ipnet::IpNet;
use shared_f2b::control::overlap;
use std::collections::HashSet;

/// What a batch comes to.
#[derive(Debug, Default)]
pub struct Folded {
    pub bans: Vec<PlannedBan>,
    /// Local jail and target.
    pub unbans: Vec<(String, IpNet)>,
    /// Nets to lift in every local jail (operators' pardons and allows).
    pub lifts: Vec<IpNet>,
    /// Events refused as bad (not those merely not for this host).
    pub rejected: usize,
    /// The (jail, target) pairs a ban or unban named so far.
    touched: HashSet<(String, IpNet)>,
}

impl Folded {
    /// Folds one more decision in.
    pub fn add(&mut self, decision: Decision) {
        match decision {
            Decision::Ban {
                jail,
                event,
                target,
                bantime,
                aggregate,
                ..
            } => {
                if !self.touched.insert((jail.clone(), target)) {
                    self.unbans.retain(|(j, t)| !(*j == jail && *t == target));
                }
                if let Some(net) = aggregate {
                    self.bans.push(PlannedBan {
                        jail: jail.clone(),
                        target: net,
                        event: event.clone(),
                        bantime,
                    });
                }
                self.bans.push(PlannedBan {
                    jail,
                    target,
                    event,
                    bantime,
                });
            }
            Decision::Unban { jail, target, .. } => {
                if !self.touched.insert((jail.clone(), target)) {
                    self.bans
                        .retain(|b| !(b.jail == jail && b.target == target));
                }
                self.unbans.push((jail, target));
            }
            Decision::Lift { net, held, .. } => {
                self.bans
                    .retain(|b| !overlap(&net, &b.target) && !net.contains(&b.event.ip));
                self.lifts.push(net);
                self.lifts.extend(held);
            }
            Decision::Ended { .. } | Decision::Keyed { .. } => {}
            Decision::Drop { reason, .. } => {
                if reason.is_rejection() {
                    self.rejected += 1;
                }
            }
        }
    }

    /// Whether it changes what Fail2Ban holds.
    pub fn changes(&self) -> bool {
        !self.bans.is_empty() || !self.unbans.is_empty() || !self.lifts.is_empty()
    }
}

/// Folds `decisions`, in order.
#[cfg(test)]
fn fold(decisions: impl IntoIterator<Item = Decision>) -> Folded {
    let mut folded = Folded::default();
    decisions.into_iter().for_each(|d| folded.add(d));
    folded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Reason;
    use shared_f2b::control::Control;
    use shared_f2b::event::{Action, Event};
    use std::time::SystemTime;

    fn net(text: &str) -> IpNet {
        match text.parse() {
            Ok(net) => net,
            Err(_) => IpNet::from(text.parse::<std::net::IpAddr>().unwrap()),
        }
    }

    fn event(action: Action, ip: &str) -> Event {
        let ip = ip.parse().unwrap();
        Event::new(action, "alice", "sshd", ip, SystemTime::now(), 600, 3).unwrap()
    }

    fn ban(jail: &str, ip: &str) -> Decision {
        Decision::Ban {
            jail: jail.into(),
            event: event(Action::Ban, ip),
            target: net(ip),
            bantime: None,
            escalated: None,
            aggregate: None,
        }
    }

    fn unban(jail: &str, ip: &str) -> Decision {
        Decision::Unban {
            jail: jail.into(),
            target: net(ip),
            event: event(Action::Unban, ip),
        }
    }

    fn lift(text: &str) -> Decision {
        Decision::Lift {
            net: net(text),
            held: vec![],
            control: Box::new(Control::pardon("op", net(text), None, "test").unwrap()),
        }
    }

    fn drop(reason: Reason) -> Decision {
        Decision::Drop {
            reason,
            detail: String::new(),
        }
    }

    /// What a fold should come to: bans, unbans and lifts as text, and the rejections.
    type Want = (
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
        usize,
    );

    /// What a fold comes to, as text: bans, unbans, lifts, rejected.
    fn shown(folded: &Folded) -> (Vec<String>, Vec<String>, Vec<String>, usize) {
        (
            folded
                .bans
                .iter()
                .map(|b| format!("{} {}", b.jail, b.target))
                .collect(),
            folded
                .unbans
                .iter()
                .map(|(j, t)| format!("{j} {t}"))
                .collect(),
            folded.lifts.iter().map(|n| n.to_string()).collect(),
            folded.rejected,
        )
    }

    #[test]
    fn the_last_word_per_jail_and_target_wins() {
        let mut aggregated = ban("sshd", "198.51.100.9");
        if let Decision::Ban { aggregate, .. } = &mut aggregated {
            *aggregate = Some(net("198.51.100.0/24"));
        }
        #[rustfmt::skip]
        let table: Vec<(&str, Vec<Decision>, Want)> = vec![
            ("a ban", vec![ban("sshd", "192.0.2.1")],
                (&["sshd 192.0.2.1/32"], &[], &[], 0)),
            ("ban then unban: the unban", vec![ban("sshd", "192.0.2.1"), unban("sshd", "192.0.2.1")],
                (&[], &["sshd 192.0.2.1/32"], &[], 0)),
            ("unban then ban: the ban", vec![unban("sshd", "192.0.2.1"), ban("sshd", "192.0.2.1")],
                (&["sshd 192.0.2.1/32"], &[], &[], 0)),
            ("other jails and addresses stay", vec![ban("sshd", "192.0.2.1"), unban("web", "192.0.2.1"), unban("sshd", "192.0.2.2")],
                (&["sshd 192.0.2.1/32"], &["web 192.0.2.1/32", "sshd 192.0.2.2/32"], &[], 0)),
            ("a lift takes out the bans it covers", vec![ban("sshd", "192.0.2.1"), ban("web", "198.51.100.1"), lift("192.0.2.0/24")],
                (&["web 198.51.100.1/32"], &[], &["192.0.2.0/24"], 0)),
            ("a ban after a lift stands (admission decides)", vec![lift("192.0.2.0/24"), ban("sshd", "192.0.2.1")],
                (&["sshd 192.0.2.1/32"], &[], &["192.0.2.0/24"], 0)),
            ("an aggregate bans its prefix too", vec![aggregated],
                (&["sshd 198.51.100.0/24", "sshd 198.51.100.9/32"], &[], &[], 0)),
            ("rejections are counted, skips are not", vec![drop(Reason::SpoofedOrigin), drop(Reason::Own), drop(Reason::Replayed)],
                (&[], &[], &[], 1)),
        ];
        for (what, decisions, (bans, unbans, lifts, rejected)) in table {
            let folded = fold(decisions);
            let strings = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            assert_eq!(
                shown(&folded),
                (strings(bans), strings(unbans), strings(lifts), rejected),
                "{what}"
            );
            assert_eq!(
                folded.changes(),
                !(bans.is_empty() && unbans.is_empty() && lifts.is_empty()),
                "{what}"
            );
        }
    }
}
