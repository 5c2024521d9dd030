//! Tokens → formatted Rust text.

use proc_macro2::TokenStream;

/// `header` (comment lines) followed by `tokens` formatted with prettyplease.
///
/// The tokens are our own output, so a parse failure is a bug in this crate; it still becomes
/// a `compile_error!` rather than a panic in the user's build script.
pub fn render(header: &str, tokens: TokenStream) -> String {
    let body = match syn::parse2::<syn::File>(tokens) {
        Ok(file) => prettyplease::unparse(&file),
        Err(e) => {
            let msg = format!("build-support produced code that does not parse: {e}");
            format!("compile_error!({msg:?});\n")
        }
    };
    format!("{header}\n{body}")
}
