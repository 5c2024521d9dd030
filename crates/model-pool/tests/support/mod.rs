//! Shared by the integration tests, the stress example and the benchmark.
#![allow(dead_code)]

pub mod fake;
pub mod stress;
