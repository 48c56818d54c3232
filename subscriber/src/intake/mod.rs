//! Where remote events come from: [`follow`] (the live subject, sequence tracking) and
//! [`catchup`] (the archiver's catch-up service, for gaps and new hosts), with [`schedule`]
//! deciding when a catch-up is due and what its answers mean.

pub mod catchup;
pub mod follow;
pub mod schedule;
