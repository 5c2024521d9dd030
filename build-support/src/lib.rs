//! The one codegen library: spec TOMLs → checked Rust items.
//!
//! Every caller goes through the same functions, so the registry's twelve statics and a
//! model declared with `candle_model!` are checked and written identically:
//!
//! - `model-registry`'s build script calls [`registry::generate`] on `model-cards/` and
//!   includes the text from `OUT_DIR`;
//! - `model-registry-macros` calls [`candle_model::expand`];
//! - the snapshot tests call [`registry::generate`] and compare the text.
//!
//! The compile-time contract lives in [`check`]: a memory figure that is missing, zero, not a
//! multiple of 100, below the weights as loaded, or stale (the facts changed since
//! `cargo xtask gen-memory-specs` ran) becomes a `compile_error!` naming the model, the field
//! and the fix; so do duplicate registry keys and specs that fail validation (with file and
//! line).

pub mod candle_model;
pub mod check;
pub mod codegen;
pub mod names;
pub mod registry;
pub mod render;

pub use check::{Diagnostic, FIX, Origin};
pub use codegen::Target;
