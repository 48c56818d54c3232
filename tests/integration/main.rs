//! Integration tests: the real binaries against real nats-server and fail2ban-server.

mod publish;
mod subscribe;
