//! Project automation as a library, so tests can drive each command directly; `main.rs` is the
//! `cargo xtask` command line over it.

pub mod fetch_cards;
