//! `tokenizer.json` files, read through the tokenizers crate with its panics contained: a
//! malformed file is a typed error naming it (see [`without_panics`]).

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{BackendError, without_panics};

/// Reads the tokenizer at `path`.
pub fn read(path: &Path) -> Result<Tokenizer, BackendError> {
    without_panics(path, || {
        Tokenizer::from_file(path)
            .map_err(|e| BackendError::Tokenizer(format!("{}: {e}", path.display())))
    })
}
