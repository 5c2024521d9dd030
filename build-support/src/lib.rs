//! The one codegen library: spec TOMLs to Rust items for the registry, its build.rs, the proc-macro, xtask and snapshot tests.
