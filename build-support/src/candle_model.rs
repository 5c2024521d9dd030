//! `candle_model!`: parse → check → expand, so the proc-macro crate stays a thin shell.
//!
//! ```text
//! candle_model! {
//!     /// Attributes and doc comments are kept.
//!     pub static MY_EMBEDDER = spec("fixtures/my-embedder.toml");
//!     pub static TINY = toml(r#" …a whole spec TOML… "#);
//! }
//! ```
//!
//! `spec("…")` is relative to the directory of the file that invokes the macro (like
//! `include_str!`). Each declaration is checked exactly like the registry's own models; a
//! refused one still declares its static (with a `compile_error!` initializer spanned on the
//! spec) so that one mistake gives one error.

use crate::check::{Diagnostic, Origin, check_memory, check_unique_keys};
use crate::codegen::{InfoSource, Target, derived_quantization, info_expr};
use model_spec::{LoadedSpec, parse_spec};
use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use std::path::{Path, PathBuf};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Ident, LitStr, Token, Visibility, parenthesized};

/// Where a declaration's spec comes from.
pub enum Source {
    /// `spec("path/to/spec.toml")`.
    File(LitStr),
    /// `toml("…")`: the spec text itself.
    Inline(LitStr),
}

impl Source {
    fn lit(&self) -> &LitStr {
        match self {
            Source::File(l) | Source::Inline(l) => l,
        }
    }
}

/// `#[attrs] vis static NAME = spec("…") | toml("…")`.
pub struct Declaration {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub ident: Ident,
    pub source: Source,
}

/// The macro input: one or more declarations separated by `;`.
pub struct Input {
    pub declarations: Vec<Declaration>,
}

const USAGE: &str = "expected `pub static NAME = spec(\"path/to/spec.toml\");` or \
                     `pub static NAME = toml(\"…spec TOML…\");`";

impl Parse for Declaration {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        input
            .parse::<Token![static]>()
            .map_err(|e| syn::Error::new(e.span(), USAGE))?;
        let ident: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let kind: Ident = input.parse()?;
        let content;
        parenthesized!(content in input);
        let lit: LitStr = content.parse()?;
        if !content.is_empty() {
            return Err(content.error("expected one string literal"));
        }
        let source = match kind.to_string().as_str() {
            "spec" => Source::File(lit),
            "toml" => Source::Inline(lit),
            other => {
                return Err(syn::Error::new(
                    kind.span(),
                    format!(
                        "unknown spec source `{other}`: write `spec(\"path/to/spec.toml\")` or `toml(\"…spec TOML…\")`"
                    ),
                ));
            }
        };
        Ok(Declaration {
            attrs,
            vis,
            ident,
            source,
        })
    }
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut declarations = Vec::new();
        while !input.is_empty() {
            declarations.push(input.parse()?);
            if input.is_empty() {
                break;
            }
            input.parse::<Token![;]>()?;
        }
        if declarations.is_empty() {
            return Err(syn::Error::new(Span::call_site(), USAGE));
        }
        Ok(Input { declarations })
    }
}

/// What the shell knows about the invocation.
#[derive(Debug, Clone)]
pub struct Context {
    /// Directory `spec("…")` paths are relative to: that of the invoking source file.
    pub base_dir: PathBuf,
}

/// A declaration's spec, loaded and validated.
struct Loaded {
    spec: LoadedSpec,
    origin: Origin,
}

/// Reads and validates the spec of one declaration. Also returns the absolute path of a spec
/// file that could be read, so the expansion can make rustc track it.
fn load(d: &Declaration, cx: &Context) -> (Result<Loaded, Diagnostic>, Option<PathBuf>) {
    match &d.source {
        Source::File(lit) => {
            let written = lit.value();
            let origin = Origin::File(written.clone());
            let abs = cx.base_dir.join(&written);
            let text = match std::fs::read_to_string(&abs) {
                Ok(t) => t,
                Err(e) => {
                    let d = Diagnostic {
                        model: None,
                        location: written,
                        field: "(file)".into(),
                        message: format!("cannot read spec: {e}"),
                        fix: Some(
                            "the path is relative to the directory of the file that invokes \
                             `candle_model!`"
                                .into(),
                        ),
                    };
                    return (Err(d), None);
                }
            };
            let loaded = parse_spec(Path::new(&written), &text)
                .map(|spec| Loaded {
                    spec,
                    origin: origin.clone(),
                })
                .map_err(|e| Diagnostic::from_spec_error(&e, &origin));
            (loaded, Some(abs))
        }
        Source::Inline(lit) => {
            let origin = Origin::Inline(d.ident.to_string());
            let loaded = parse_spec(Path::new("inline"), &lit.value())
                .map(|spec| Loaded {
                    spec,
                    origin: origin.clone(),
                })
                .map_err(|e| Diagnostic::from_spec_error(&e, &origin));
            (loaded, None)
        }
    }
}

/// Expands a `candle_model!` invocation.
pub fn expand(input: TokenStream, cx: &Context) -> TokenStream {
    let input: Input = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let target = Target::external();
    let k = target.krate();
    let loads: Vec<_> = input.declarations.iter().map(|d| load(d, cx)).collect();

    let keyed: Vec<(usize, (&str, String))> = loads
        .iter()
        .enumerate()
        .filter_map(|(i, (l, _))| l.as_ref().ok().map(|l| (i, l)))
        .map(|(i, l)| {
            let key = l.spec.spec.registry_key.get_ref().as_str();
            let line = l.spec.line(l.spec.spec.registry_key.span());
            let ident = &input.declarations[i].ident;
            (i, (key, format!("`{ident}` ({})", l.origin.at(Some(line)))))
        })
        .collect();
    let flat: Vec<_> = keyed.iter().map(|(_, x)| x.clone()).collect();
    let duplicates: Vec<(usize, Diagnostic)> = check_unique_keys(&flat)
        .into_iter()
        .map(|(j, d)| (keyed[j].0, d))
        .collect();

    let mut out = TokenStream::new();
    for (i, (d, (loaded, tracked))) in input.declarations.iter().zip(&loads).enumerate() {
        if let Some(abs) = tracked {
            // Makes rustc (and so cargo) rebuild when the spec file changes.
            let abs = abs.to_string_lossy();
            out.extend(quote!(
                const _: &[u8] = include_bytes!(#abs);
            ));
        }
        let duplicate = duplicates.iter().find(|(j, _)| *j == i).map(|(_, d)| d);
        let checked = match (loaded, duplicate) {
            (Err(diag), _) => Err(diag.clone()),
            (Ok(_), Some(diag)) => Err(diag.clone()),
            (Ok(l), None) => check_memory(&l.spec, &l.origin, None).map(|m| (l, m)),
        };
        let Declaration {
            attrs, vis, ident, ..
        } = d;
        match checked {
            Ok((l, memory)) => {
                let spec_path = match &d.source {
                    Source::File(lit) => lit.value(),
                    Source::Inline(_) => format!("inline spec of `{ident}`"),
                };
                let spec_text = match (&d.source, tracked) {
                    (Source::File(_), Some(abs)) => {
                        let abs = abs.to_string_lossy();
                        quote!(include_str!(#abs))
                    }
                    (Source::Inline(lit), _) | (Source::File(lit), None) => {
                        let text = l.spec.text.as_str();
                        let _ = lit;
                        quote!(#text)
                    }
                };
                let info = info_expr(
                    &InfoSource {
                        spec: &l.spec.spec,
                        memory,
                        quantization: derived_quantization(&l.spec.spec, &memory.profile),
                        spec_path,
                        spec_text,
                    },
                    &target,
                );
                out.extend(quote! {
                    #(#attrs)*
                    #vis static #ident: #k::CandleModelInfo = #info;
                });
            }
            Err(diag) => {
                let msg = diag.to_string();
                let span = d.source.lit().span();
                let error = quote_spanned!(span=> compile_error!(#msg));
                out.extend(quote! {
                    #(#attrs)*
                    #vis static #ident: #k::CandleModelInfo = #error;
                });
            }
        }
    }
    out
}
