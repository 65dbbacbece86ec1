//! The integration tests, on real clusters: one test binary, so that the tests of every file
//! run side by side (`RUST_TEST_THREADS`, set in `.cargo/config.toml`): they wait on
//! PostgreSQL far more than they compute. `cargo test --test it failover::` runs one file's.

#[macro_use]
mod common;

mod crashpoints;
mod docker;
mod drill;
mod failover;
mod foundation;
mod haproxy;
mod monitor;
mod netns;
mod safety_input;
mod safety_ops;
mod safety_start;
mod sync;
mod ux;
