//! Text to token ids: the model's own `tokenizer.json`, its length limit, query instructions.
//!
//! Hub tokenizers often carry truncation and padding settings that are not the model's serving
//! limits (all-MiniLM-L6-v2's says "truncate at 128, pad to 128" while Sentence-Transformers
//! truncates at 256 and pads per batch). Both are replaced here: truncation (or refusal) at the
//! configured limit, and no padding, since batches are padded by the model code.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use model_runtime::BackendError;
use model_runtime::error::InputError;

/// What happens to an input longer than the model's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Cut it at the limit (what Sentence-Transformers does).
    #[default]
    Truncate,
    /// Refuse the request with [`InputError::TooLong`].
    Refuse,
}

/// How a text is used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TextMode {
    /// A document or passage: embedded as is.
    #[default]
    Document,
    /// A search query: prefixed with the model's query instruction (GTE-Qwen2, Stella,
    /// NV-Embed); models without one embed it as is.
    Query,
    /// A query with this instruction instead of the model's own.
    QueryWith(String),
}

/// One tokenized input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Tokens before this index are an instruction that pooling skips (NV-Embed); 0 otherwise.
    pub pool_from: usize,
    /// Whether the text was cut at the limit.
    pub truncated: bool,
}

impl Encoded {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A tokenizer with the serving rules of one model.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    limit: usize,
    overflow: Overflow,
    query_instruction: Option<String>,
    skip_instruction_in_pooling: bool,
    append_eos: Option<u32>,
    pad_id: u32,
}

/// What a family needs from its tokenizer besides the file.
#[derive(Debug, Clone, Default)]
pub struct TextRules {
    /// Instruction prefixed to queries.
    pub query_instruction: Option<String>,
    /// Whether pooling skips the instruction's tokens (NV-Embed masks them).
    pub skip_instruction_in_pooling: bool,
    /// A token id appended to every input (NV-Embed appends `</s>`; the Llama tokenizer does
    /// not add it itself). Counted in the limit.
    pub append_eos: Option<u32>,
    /// Pad id to use when the tokenizer names none.
    pub default_pad_id: u32,
}

impl TextEncoder {
    /// Loads `tokenizer.json` with `limit` tokens per input (special tokens included).
    pub fn from_file(
        path: &Path,
        limit: usize,
        overflow: Overflow,
        rules: TextRules,
    ) -> Result<Self, BackendError> {
        let mut tokenizer = model_runtime::tokenizer::read(path)?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .unwrap_or(rules.default_pad_id);
        tokenizer.with_padding(None);
        let appended = usize::from(rules.append_eos.is_some());
        if limit <= appended + 1 {
            return Err(BackendError::config(
                path,
                format!("the token limit {limit} leaves no room for any text"),
            ));
        }
        let truncation = match overflow {
            Overflow::Truncate => Some(TruncationParams {
                max_length: limit - appended,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }),
            Overflow::Refuse => None,
        };
        tokenizer
            .with_truncation(truncation)
            .map_err(|e| BackendError::Tokenizer(e.to_string()))?;
        Ok(TextEncoder {
            tokenizer,
            limit,
            overflow,
            query_instruction: rules.query_instruction,
            skip_instruction_in_pooling: rules.skip_instruction_in_pooling,
            append_eos: rules.append_eos,
            pad_id,
        })
    }

    /// Most tokens per input.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The id padded batches are filled with.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The instruction queries get by default.
    pub fn query_instruction(&self) -> Option<&str> {
        self.query_instruction.as_deref()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Tokenizes `texts`; one result per text so that one bad text fails only its request.
    pub fn encode(&self, texts: &[String], mode: &TextMode) -> Result<Vec<Encoded>, InputError> {
        if texts.is_empty() {
            return Err(InputError::Empty { index: None });
        }
        if let Some(index) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(InputError::Empty { index: Some(index) });
        }
        let instruction = match mode {
            TextMode::Document => None,
            TextMode::Query => self.query_instruction.as_deref(),
            TextMode::QueryWith(s) => Some(s.as_str()),
        };
        let inputs: Vec<String> = match instruction {
            Some(prefix) => texts.iter().map(|t| format!("{prefix}{t}")).collect(),
            None => texts.to_vec(),
        };
        let pool_from = match instruction {
            Some(prefix) if self.skip_instruction_in_pooling => self.count_tokens(prefix)?,
            _ => 0,
        };
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| InputError::Tokenizer(e.to_string()))?;
        let mut out = Vec::with_capacity(encodings.len());
        for (index, encoding) in encodings.into_iter().enumerate() {
            let truncated = !encoding.get_overflowing().is_empty();
            let mut ids = encoding.get_ids().to_vec();
            if let Some(eos) = self.append_eos
                && ids.last() != Some(&eos)
            {
                ids.push(eos);
            }
            if self.overflow == Overflow::Refuse && ids.len() > self.limit {
                return Err(InputError::TooLong {
                    index,
                    tokens: ids.len(),
                    limit: self.limit,
                });
            }
            out.push(Encoded {
                pool_from: pool_from.min(ids.len().saturating_sub(1)),
                ids,
                truncated,
            });
        }
        Ok(out)
    }

    /// Tokens of `text` with the tokenizer's special tokens (a BOS, where it adds one).
    fn count_tokens(&self, text: &str) -> Result<usize, InputError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| InputError::Tokenizer(e.to_string()))?;
        // A tokenizer that appends an end token counts it too; it is not part of the prefix.
        let ids = encoding.get_ids();
        let trailing_special = encoding
            .get_special_tokens_mask()
            .iter()
            .rev()
            .take_while(|&&m| m == 1)
            .count();
        Ok(ids.len() - trailing_special.min(ids.len().saturating_sub(1)))
    }
}

/// A right-padded batch: ids `[batch, max_len]`, mask `[batch, max_len]` (1 = real token, as
/// u32), the length of each row and where its pooling starts.
pub struct Padded {
    /// Token ids.
    pub ids: Tensor,
    /// Attention mask.
    pub mask: Tensor,
    /// Real length of each row.
    pub lens: Vec<usize>,
    /// Pooling mask (1 = pooled), as f32: the attention mask without instruction tokens.
    pub pool_mask: Tensor,
}

impl Padded {
    /// Each row's real tokens, without the padding (for networks that run unpadded rows).
    pub fn unpadded_ids(&self) -> candle_core::Result<Vec<Vec<u32>>> {
        let mut ids = self.ids.to_vec2::<u32>()?;
        for (row, &len) in ids.iter_mut().zip(&self.lens) {
            row.truncate(len);
        }
        Ok(ids)
    }
}

/// Pads `batch` on the right with `pad_id`.
pub fn pad_right(batch: &[&Encoded], pad_id: u32, device: &Device) -> candle_core::Result<Padded> {
    let max_len = batch.iter().map(|e| e.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(batch.len() * max_len);
    let mut mask = Vec::with_capacity(batch.len() * max_len);
    let mut pool = Vec::with_capacity(batch.len() * max_len);
    for e in batch {
        ids.extend_from_slice(&e.ids);
        ids.extend(std::iter::repeat_n(pad_id, max_len - e.len()));
        mask.extend(std::iter::repeat_n(1u32, e.len()));
        mask.extend(std::iter::repeat_n(0u32, max_len - e.len()));
        pool.extend((0..max_len).map(|i| {
            if i >= e.pool_from && i < e.len() {
                1f32
            } else {
                0f32
            }
        }));
    }
    let shape = (batch.len(), max_len);
    Ok(Padded {
        ids: Tensor::from_vec(ids, shape, device)?,
        mask: Tensor::from_vec(mask, shape, device)?,
        lens: batch.iter().map(|e| e.len()).collect(),
        pool_mask: Tensor::from_vec(pool, shape, device)?,
    })
}
