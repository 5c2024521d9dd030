//! Project automation as a library, so tests can drive its pieces directly; `main.rs` is the
//! `cargo xtask` command line over it.

pub mod dispatch;
