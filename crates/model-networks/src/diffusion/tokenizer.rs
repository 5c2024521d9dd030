//! Prompt tokenizers of the text encoders: fixed-length sequences as Diffusers builds them
//! (CLIP: `<|startoftext|> … <|endoftext|>` padded to 77; T5: `… </s>` padded to the
//! profile's text length), truncated at that length with the end token kept.
//!
//! The Hub repositories ship CLIP's tokenizer as `vocab.json` + `merges.txt` (no
//! `tokenizer.json`), so the byte-level BPE is assembled here the way `CLIPTokenizerFast`
//! defines it; a `tokenizer.json` next to them takes precedence.

use std::path::Path;

use tokenizers::Tokenizer;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{SplitDelimiterBehavior, normalizers, pre_tokenizers};

use model_runtime::BackendError;

/// CLIP's start and end tokens.
pub const CLIP_BOS: &str = "<|startoftext|>";
/// CLIP's end token (also its padding unless `special_tokens_map.json` names another).
pub const CLIP_EOS: &str = "<|endoftext|>";
/// The word pattern of CLIP's tokenizer (`CLIPTokenizerFast`'s pre-tokenizer).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A prompt as token ids of a fixed length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Exactly the tokenizer's length, padded.
    pub ids: Vec<u32>,
    /// Index of the end token (CLIP pools there).
    pub eos: usize,
    /// Whether the prompt was cut.
    pub truncated: bool,
}

/// A tokenizer that produces fixed-length sequences.
#[derive(Debug, Clone)]
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    length: usize,
    pad_id: u32,
}

impl PromptTokenizer {
    /// CLIP's tokenizer from folder `dir` (`tokenizer.json`, else `vocab.json` + `merges.txt`),
    /// padded with `special_tokens_map.json`'s `pad_token` (else `<|endoftext|>`).
    pub fn clip(dir: &Path, length: usize) -> Result<Self, BackendError> {
        let json = dir.join("tokenizer.json");
        let tokenizer = if json.is_file() {
            model_runtime::tokenizer::read(&json)?
        } else {
            model_runtime::error::without_panics(&dir.join("merges.txt"), || clip_bpe(dir))?
        };
        let pad = special_token(dir, "pad_token")?.unwrap_or_else(|| CLIP_EOS.to_owned());
        Self::new(tokenizer, length, &pad, dir)
    }

    /// T5's `tokenizer.json` from folder `dir`, padded with `<pad>`.
    pub fn t5(dir: &Path, length: usize) -> Result<Self, BackendError> {
        let json = dir.join("tokenizer.json");
        if !json.is_file() {
            return Err(BackendError::MissingFile {
                dir: dir.to_path_buf(),
                file: "tokenizer.json".into(),
                why: "the T5 tokenizer",
            });
        }
        let tokenizer = model_runtime::tokenizer::read(&json)?;
        let pad = special_token(dir, "pad_token")?.unwrap_or_else(|| "<pad>".to_owned());
        Self::new(tokenizer, length, &pad, dir)
    }

    fn new(
        mut tokenizer: Tokenizer,
        length: usize,
        pad: &str,
        dir: &Path,
    ) -> Result<Self, BackendError> {
        // Sequences are cut and padded here, to the encoder's length; whatever the file says
        // about truncation or padding is not the serving rule.
        tokenizer
            .with_truncation(None)
            .map_err(|e| BackendError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let pad_id = tokenizer.token_to_id(pad).ok_or_else(|| {
            BackendError::Tokenizer(format!(
                "{}: the padding token `{pad}` is not in the vocabulary",
                dir.display()
            ))
        })?;
        if length < 2 {
            return Err(BackendError::Tokenizer(format!(
                "{}: a sequence length of {length} leaves no room for the prompt",
                dir.display()
            )));
        }
        Ok(PromptTokenizer {
            tokenizer,
            length,
            pad_id,
        })
    }

    /// The id of `token`, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Sequence length.
    pub fn length(&self) -> usize {
        self.length
    }

    /// Tokenizes `prompt` with the tokenizer's special tokens, cut to the length with the
    /// last token (the end token) kept, and padded.
    pub fn encode(&self, prompt: &str) -> Result<Tokens, BackendError> {
        let encoding = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| BackendError::Tokenizer(e.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        let truncated = ids.len() > self.length;
        if truncated {
            let last = ids[ids.len() - 1];
            ids.truncate(self.length - 1);
            ids.push(last);
        }
        let eos = ids.len().saturating_sub(1);
        ids.resize(self.length, self.pad_id);
        Ok(Tokens {
            ids,
            eos,
            truncated,
        })
    }
}

/// `CLIPTokenizerFast` assembled from `vocab.json` and `merges.txt`.
fn clip_bpe(dir: &Path) -> Result<Tokenizer, BackendError> {
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    for f in [&vocab, &merges] {
        if !f.is_file() {
            return Err(BackendError::MissingFile {
                dir: dir.to_path_buf(),
                file: f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                why: "the CLIP tokenizer (tokenizer.json, or vocab.json + merges.txt)",
            });
        }
    }
    let tok_err = |e: tokenizers::Error| BackendError::Tokenizer(format!("{}: {e}", dir.display()));
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .unk_token(CLIP_EOS.to_owned())
        .end_of_word_suffix("</w>".to_owned())
        .build()
        .map_err(tok_err)?;
    let id = |t: &str| {
        bpe.get_vocab().get(t).copied().ok_or_else(|| {
            BackendError::Tokenizer(format!("{}: `{t}` is not in vocab.json", vocab.display()))
        })
    };
    let (bos, eos) = (id(CLIP_BOS)?, id(CLIP_EOS)?);
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(vec![
            normalizers::NormalizerWrapper::NFC(NFC),
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                " ",
            )
            .map_err(tok_err)?
            .into(),
            Lowercase.into(),
        ])))
        .map_err(tok_err)?;
    tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        Split::new(
            SplitPattern::Regex(CLIP_PATTERN.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(tok_err)?
        .into(),
        pre_tokenizers::PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
    ])));
    tokenizer.with_post_processor(Some(
        RobertaProcessing::new((CLIP_EOS.into(), eos), (CLIP_BOS.into(), bos))
            .trim_offsets(false)
            .add_prefix_space(false),
    ));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer
        .add_special_tokens([
            tokenizers::AddedToken::from(CLIP_BOS, true),
            tokenizers::AddedToken::from(CLIP_EOS, true),
        ])
        .map_err(tok_err)?;
    Ok(tokenizer)
}

/// `key` of `special_tokens_map.json` in `dir` (a string or `{"content": …}`), if any.
fn special_token(dir: &Path, key: &str) -> Result<Option<String>, BackendError> {
    let path = dir.join("special_tokens_map.json");
    if !path.is_file() {
        return Ok(None);
    }
    let map: serde_json::Value = model_runtime::model_dir::read_json(&path)?;
    Ok(match map.get(key) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(v) => v.get("content").and_then(|c| c.as_str()).map(str::to_owned),
        None => None,
    })
}
