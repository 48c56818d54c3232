//! Integration tests: the real binaries against real nats-server and fail2ban-server.

mod archive;
mod auth;
mod chaos;
mod cluster;
mod control;
mod faults;
mod federation;
mod feeds;
mod feeds_attack;
mod health;
mod install;
mod intake;
mod keys;
mod legacy;
mod legacy_api;
mod legacy_bridge;
mod misp;
mod network;
mod operations;
mod powercut;
mod publish;
mod site;
mod site_attack;
mod subscribe;
mod trust;
