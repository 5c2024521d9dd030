//! Word-level `tokenizer.json` files built with the tokenizers crate: the tiny embedders',
//! LLaVA's and T5's. Each token of the list gets its index as id; a whitespace pre-tokenizer
//! splits words; the template (`"[CLS] $A [SEP]"`, `"$A </s>"` …) wraps a single input.

use std::collections::HashMap;
use std::path::Path;

use model_runtime::BackendError;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// How a word-level tokenizer is built.
pub(crate) struct WordLevelTokenizer<'a> {
    /// The vocabulary: ids 0… in this order.
    pub tokens: Vec<&'a str>,
    /// The token unknown words become.
    pub unk: &'a str,
    /// Lower-case the text first.
    pub lowercase: bool,
    /// Tokens matched whole before words are split (`<image>`).
    pub added: &'a [&'a str],
    /// Wraps a single input; its special tokens are the vocabulary's.
    pub template: Option<&'a str>,
}

impl WordLevelTokenizer<'_> {
    /// Writes `dir/tokenizer.json`.
    pub fn write(&self, dir: &Path) -> Result<(), BackendError> {
        let err = |e: tokenizers::Error| BackendError::Tokenizer(e.to_string());
        let id = |t: &str| self.tokens.iter().position(|w| *w == t).map(|i| i as u32);
        let vocab: HashMap<String, u32> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i as u32))
            .collect();
        let model = WordLevel::builder()
            .vocab(vocab.into_iter().collect())
            .unk_token(self.unk.to_owned())
            .build()
            .map_err(err)?;
        let mut tok = Tokenizer::new(model);
        if self.lowercase {
            tok.with_normalizer(Some(Lowercase)).map_err(err)?;
        }
        tok.with_pre_tokenizer(Some(Whitespace {}));
        if !self.added.is_empty() {
            tok.add_special_tokens(self.added.iter().map(|s| AddedToken::from(*s, true)))
                .map_err(err)?;
        }
        if let Some(t) = self.template {
            let specials: Vec<(&str, u32)> = t
                .split_whitespace()
                .filter_map(|piece| id(piece).map(|i| (piece, i)))
                .collect();
            let post = TemplateProcessing::builder()
                .try_single(t)
                .map_err(|e| BackendError::Tokenizer(e.to_string()))?
                .special_tokens(specials)
                .build()
                .map_err(|e| BackendError::Tokenizer(e.to_string()))?;
            tok.with_post_processor(Some(post));
        }
        std::fs::create_dir_all(dir).map_err(|e| BackendError::io(dir, e))?;
        tok.save(dir.join("tokenizer.json"), false).map_err(err)
    }
}
