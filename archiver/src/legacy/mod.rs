//! Coming from the original Shared Fail2Ban (one MySQL table `f2b` that hosts INSERT into and
//! pull from by cron): [`import`] reads its whole history into the archive; [`row`] turns one
//! row into an event (the writing host's local time to UTC, the jail lower-cased, the address
//! checked); [`hosts`] names the host of a row; [`api`] serves the original's HTTP API to old
//! hosts while the site moves.

pub mod api;
pub mod bridge;
pub mod hosts;
pub mod import;
pub mod row;
