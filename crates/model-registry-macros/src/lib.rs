//! Proc-macro shell over `build-support`: declare a model of your own, checked like the twelve.
//!
//! Use it through `model_registry::candle_model!`, which documents the syntax. Parsing,
//! checking and expansion live in `build_support::candle_model`; this crate only finds the
//! directory of the invoking file.

use proc_macro::{Span, TokenStream};
use std::path::PathBuf;

/// Declares `CandleModelInfo` statics from spec TOMLs, checked exactly like the registry's
/// own models. See `model_registry::candle_model!`.
#[proc_macro]
pub fn candle_model(input: TokenStream) -> TokenStream {
    let cx = build_support::candle_model::Context {
        base_dir: base_dir(),
    };
    build_support::candle_model::expand(input.into(), &cx).into()
}

/// Directory of the file that invokes the macro (the crate root when rustc cannot say), made
/// absolute: rustc may name the file relative to its working directory, and the expansion's
/// `include_bytes!` would resolve a relative path against the invoking file instead.
fn base_dir() -> PathBuf {
    let dir = Span::call_site()
        .local_file()
        .and_then(|f| f.parent().map(std::path::Path::to_path_buf))
        .or_else(|| std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from))
        .unwrap_or_default();
    std::path::absolute(&dir).unwrap_or(dir)
}
