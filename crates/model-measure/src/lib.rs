//! Measurement programs and benchmarks of the workspace (unpublished). The programs are the
//! binaries of this crate (`cargo run --release -p model-measure --bin …`), each described in
//! its own header; the benches run with `cargo bench -p model-measure`.
