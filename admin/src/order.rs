//! From the command line to the control event it publishes, with the defaults applied and every
//! check of [`Control`] passed before anything is sent.

use crate::cli::{DEFAULT_PARDON, Lasts};
use ipnet::IpNet;
use shared_f2b::control::{Control, ControlError};
use std::net::IpAddr;
use uuid::Uuid;

/// One order as the operator gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    Pardon {
        net: IpNet,
        lasts: Option<Lasts>,
        reason: String,
    },
    Allow {
        net: IpNet,
        lasts: Option<Lasts>,
        reason: String,
    },
    Revoke {
        id: Uuid,
        reason: Option<String>,
    },
    Ban {
        ip: IpAddr,
        bantime: i64,
        reason: String,
    },
}

impl Order {
    /// The control event, ordered by `operator` (the config's `host_id`). A pardon lasts 24 h
    /// unless told otherwise, an allow until revoked; a revoke's reason says who revoked.
    pub fn control(&self, operator: &str) -> Result<Control, ControlError> {
        let given = match self {
            Order::Pardon { reason, .. }
            | Order::Allow { reason, .. }
            | Order::Ban { reason, .. } => Some(reason),
            Order::Revoke { reason, .. } => reason.as_ref(),
        };
        if given.is_some_and(|r| r.trim().is_empty()) {
            return Err(ControlError::NoReason);
        }
        match self {
            Order::Pardon { net, lasts, reason } => {
                let lasts = lasts.unwrap_or(Lasts::For(DEFAULT_PARDON));
                Control::pardon(operator, *net, lasts.duration(), reason)
            }
            Order::Allow { net, lasts, reason } => {
                let lasts = lasts.unwrap_or(Lasts::Forever);
                Control::allow(operator, *net, lasts.duration(), reason)
            }
            Order::Revoke { id, reason } => {
                let reason = match reason {
                    Some(r) => r.clone(),
                    None => format!("revoked by {operator}"),
                };
                Control::revoke(operator, *id, &reason)
            }
            Order::Ban {
                ip,
                bantime,
                reason,
            } => Control::ban(operator, *ip, *bantime, reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_f2b::control::ControlKind;
    use std::time::{Duration, SystemTime};

    fn lasts_for(c: &Control) -> Option<Duration> {
        c.until.map(|u| u.duration_since(c.time).unwrap())
    }

    #[test]
    fn defaults() {
        let net: IpNet = "192.0.2.7/32".parse().unwrap();
        let p = Order::Pardon {
            net,
            lasts: None,
            reason: "mistake".into(),
        }
        .control("ops")
        .unwrap();
        assert_eq!(p.kind, ControlKind::Pardon);
        assert_eq!(p.operator, "ops");
        let d = lasts_for(&p).unwrap();
        assert!(
            d > DEFAULT_PARDON - Duration::from_secs(5) && d <= DEFAULT_PARDON,
            "{d:?}"
        );
        let forever = Order::Pardon {
            net,
            lasts: Some(Lasts::Forever),
            reason: "x".into(),
        };
        assert_eq!(forever.control("ops").unwrap().until, None);

        let a = Order::Allow {
            net: "198.51.100.0/24".parse().unwrap(),
            lasts: None,
            reason: "partner".into(),
        }
        .control("ops")
        .unwrap();
        assert_eq!((a.kind, a.until), (ControlKind::Allow, None));

        let id = Uuid::now_v7();
        let r = Order::Revoke { id, reason: None }.control("ops").unwrap();
        assert_eq!(r.revokes, Some(id));
        assert_eq!(r.reason, "revoked by ops");

        let b = Order::Ban {
            ip: "192.0.2.1".parse().unwrap(),
            bantime: -1,
            reason: "scanner".into(),
        }
        .control("ops")
        .unwrap();
        assert_eq!((b.kind, b.until), (ControlKind::Ban, None));
        let b = Order::Ban {
            ip: "192.0.2.1".parse().unwrap(),
            bantime: 3600,
            reason: "scanner".into(),
        }
        .control("ops")
        .unwrap();
        assert!(b.until.unwrap() > SystemTime::now() + Duration::from_secs(3590));
    }

    #[test]
    fn bad_reasons_are_refused() {
        let net: IpNet = "192.0.2.7/32".parse().unwrap();
        for (reason, want) in [
            ("", ControlError::NoReason),
            ("   ", ControlError::NoReason),
            ("two\nlines", ControlError::BadReason),
            (&"x".repeat(257), ControlError::BadReason),
        ] {
            let order = Order::Pardon {
                net,
                lasts: None,
                reason: reason.to_owned(),
            };
            assert_eq!(order.control("ops").unwrap_err(), want, "{reason:?}");
        }
        let revoke = Order::Revoke {
            id: Uuid::now_v7(),
            reason: Some(String::new()),
        };
        assert_eq!(revoke.control("ops").unwrap_err(), ControlError::NoReason);
    }
}
