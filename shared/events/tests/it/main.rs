//! Integration tests of ordermesh-events against a real nats-server and real
//! databases (SQLite file and PostgreSQL). One test binary, so the crate is
//! linked once.

mod admin;
mod consumer;
mod contract;
mod dead_letters;
mod harness;
mod outbox;
mod python;
mod support;
