//! Integration tests: the real binaries against real nats-server and fail2ban-server.

mod archive;
mod auth;
mod faults;
mod publish;
mod subscribe;
mod trust;
