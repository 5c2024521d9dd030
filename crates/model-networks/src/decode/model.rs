//! [`GenerativeModel`]: a loaded generator (network, tokenizer, end tokens, limits), what the
//! pool holds while the model is loaded; and [`Session`], one request's state on it.

use std::fmt;
use std::path::PathBuf;

use candle_core::{DType, Tensor};
use candle_transformers::models::llama;
use image::DynamicImage;
use tokenizers::Tokenizer;

use model_runtime::{BackendError, GgufFile, ModelDir};

use super::attention::KvCaches;
use super::batch::{BatchStats, StepBatcher};
use super::{Decoder, llava, phi3, qwen3_moe};

enum Net {
    Phi3(phi3::Model),
    Qwen3Moe(qwen3_moe::Model),
    Llava(Box<llava::Model>),
}

/// What [`GenerativeModel::load`] needs besides the device.
#[derive(Debug, Clone)]
pub struct DecoderParams {
    /// The key requests use (named in errors).
    pub key: String,
    /// The GGUF file (Phi-4, Qwen3-Coder) or checkpoint directory (LLaVA).
    pub source: PathBuf,
    /// The network.
    pub decoder: Decoder,
    /// `tokenizer.json` to use; by default the one beside the weights, else (GGUF) the
    /// vocabulary in the file.
    pub tokenizer: Option<PathBuf>,
    /// Weight dtype of safetensors checkpoints (LLaVA); GGUF tensors stay as stored.
    pub dtype: Option<DType>,
    /// Tokens (prompt + output) one request may hold; capped at the model's own maximum.
    pub context_tokens: usize,
    /// How the GGUF decoders store each request's keys and values (F16 by default: half
    /// the memory of F32; attention runs in F32 either way). LLaVA keeps candle's cache.
    pub kv_dtype: DType,
    /// Tokens that end an answer besides the file's end-of-sequence token (the chat
    /// template's end-of-turn markers, such as `<|im_end|>`).
    pub end_tokens: Vec<String>,
}

/// A loaded generator. Immutable and shared by every request on it.
pub struct GenerativeModel {
    key: String,
    decoder: Decoder,
    net: Net,
    tokenizer: Tokenizer,
    end_ids: Vec<u32>,
    model_max: usize,
    positions: usize,
    kv_dtype: DType,
    batcher: StepBatcher,
}

impl fmt::Debug for GenerativeModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerativeModel")
            .field("key", &self.key)
            .field("decoder", &self.decoder)
            .field("model_max", &self.model_max)
            .field("positions", &self.positions)
            .finish()
    }
}

impl GenerativeModel {
    /// Loads the model `config` describes on `device` (blocking: reads the weights).
    pub fn load(
        config: &DecoderParams,
        device: &candle_core::Device,
    ) -> Result<Self, BackendError> {
        let backend = config.decoder;
        let want = config.context_tokens;
        let (net, tokenizer, model_max, mut end_ids) = match backend {
            Decoder::Phi3Gguf | Decoder::Qwen3MoeGguf => {
                let mut f = GgufFile::open(&config.source)?;
                let arch = f.architecture()?;
                if arch != backend.architecture() {
                    return Err(BackendError::config(
                        &config.source,
                        format!(
                            "general.architecture is `{arch}` but `{}` is configured as {}",
                            config.key,
                            backend.architecture()
                        ),
                    ));
                }
                let tokenizer = f.tokenizer(config.tokenizer.as_deref())?;
                let eos = f.optional("tokenizer.ggml.eos_token_id", GgufFile::usize)?;
                let (net, max) = if backend == Decoder::Phi3Gguf {
                    let m = phi3::Model::load(&mut f, device, want)?;
                    let max = m.config().context_length;
                    (Net::Phi3(m), max)
                } else {
                    let m = qwen3_moe::Model::load(&mut f, device, want)?;
                    let max = m.config().context_length;
                    (Net::Qwen3Moe(m), max)
                };
                (
                    net,
                    tokenizer,
                    max,
                    eos.map(|e| e as u32).into_iter().collect(),
                )
            }
            Decoder::Llava15 => {
                let dir = ModelDir::local(&config.source)?;
                let tok_path = match &config.tokenizer {
                    Some(p) => p.clone(),
                    None => dir.file("tokenizer.json", "the tokenizer")?,
                };
                let tokenizer = model_runtime::tokenizer::read(&tok_path)?;
                let m = llava::Model::load(&dir, device, config.dtype.unwrap_or(DType::F16))?;
                let max = m.positions();
                let eos = vec![m.config().text_config.eos_token_id];
                (Net::Llava(Box::new(m)), tokenizer, max, eos)
            }
        };
        for name in &config.end_tokens {
            if let Some(id) = tokenizer.token_to_id(name) {
                end_ids.push(id);
            }
        }
        end_ids.sort_unstable();
        end_ids.dedup();
        Ok(GenerativeModel {
            key: config.key.clone(),
            decoder: backend,
            net,
            tokenizer,
            end_ids,
            model_max,
            positions: want.min(model_max),
            kv_dtype: config.kv_dtype,
            batcher: StepBatcher::default(),
        })
    }

    /// The registry key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The network.
    pub fn decoder(&self) -> Decoder {
        self.decoder
    }

    /// The model's own maximum context.
    pub fn model_max(&self) -> usize {
        self.model_max
    }

    /// The longest context a request can have here: the configured one, capped at the model's.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Tokens that end generation.
    pub fn end_ids(&self) -> &[u32] {
        &self.end_ids
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Patch features each image adds to a prompt (LLaVA), else 0.
    pub fn image_tokens(&self) -> usize {
        match &self.net {
            Net::Llava(m) => m.config().image_tokens(),
            _ => 0,
        }
    }

    /// The `<image>` token id (LLaVA).
    pub fn image_token_id(&self) -> Option<u32> {
        match &self.net {
            Net::Llava(m) => Some(m.config().image_token_index),
            _ => None,
        }
    }

    /// Tokenizes `text` (special tokens such as `<|im_start|>` are recognized; the
    /// tokenizer's own additions such as LLaVA's `<s>` are made).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, BackendError> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| BackendError::Tokenizer(e.to_string()))
    }

    /// A new request's state, holding up to `capacity` tokens.
    pub fn session(&self, capacity: usize) -> Result<Session<'_>, BackendError> {
        let state = match &self.net {
            Net::Phi3(m) => State::Kv(m.new_cache(capacity, self.kv_dtype)),
            Net::Qwen3Moe(m) => State::Kv(m.new_cache(capacity, self.kv_dtype)),
            Net::Llava(m) => State::Llama(Box::new(m.new_cache()?), 0),
        };
        Ok(Session {
            model: self,
            state,
            joined: false,
        })
    }

    /// How the decoding steps of concurrent requests were batched so far (GGUF decoders).
    pub fn batch_stats(&self) -> BatchStats {
        self.batcher.stats()
    }

    /// One decoding step of each `(token, cache)` in a single forward pass.
    fn decode_batch(
        &self,
        steps: &mut [(u32, &mut KvCaches)],
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let logits = match &self.net {
            Net::Phi3(m) => m.decode_batch(steps)?,
            Net::Qwen3Moe(m) => m.decode_batch(steps)?,
            Net::Llava(_) => candle_core::bail!("LLaVA sessions are not batched"),
        };
        logits.into_iter().map(to_vec).collect()
    }
}

enum State {
    Kv(KvCaches),
    Llama(Box<llama::Cache>, usize),
}

/// One request's state: its KV cache and position. Dropping it frees the cache.
///
/// The decoding steps of concurrent sessions on one GGUF model run batched (see
/// [`batch`](super::batch)); a session takes part from its first [`step`](Self::step) until
/// it is dropped.
pub struct Session<'a> {
    model: &'a GenerativeModel,
    state: State,
    joined: bool,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.joined {
            self.model.batcher.leave();
        }
    }
}

impl Session<'_> {
    /// Runs the prompt, `chunk` tokens per step (LLaVA: in one step, with `image`'s features
    /// in place of the `<image>` token); the logits after the last prompt token.
    pub fn prefill(
        &mut self,
        tokens: &[u32],
        image: Option<&DynamicImage>,
        chunk: usize,
    ) -> candle_core::Result<Vec<f32>> {
        if tokens.is_empty() {
            candle_core::bail!("empty prompt");
        }
        let logits = match (&self.model.net, &mut self.state) {
            (Net::Phi3(m), State::Kv(cache)) => {
                let mut last = None;
                for part in tokens.chunks(chunk.max(1)) {
                    last = Some(m.forward(part, cache)?);
                }
                last
            }
            (Net::Qwen3Moe(m), State::Kv(cache)) => {
                let mut last = None;
                for part in tokens.chunks(chunk.max(1)) {
                    last = Some(m.forward(part, cache)?);
                }
                last
            }
            (Net::Llava(m), State::Llama(cache, pos)) => {
                let features = image.map(|i| m.image_features(i)).transpose()?;
                let embeds = m.embed(tokens, features.as_ref())?;
                let n = embeds.dim(1)?;
                let logits = m.forward_embeds(&embeds, *pos, cache)?;
                *pos += n;
                Some(logits)
            }
            _ => candle_core::bail!("session state does not match the network"),
        };
        logits.map_or_else(|| candle_core::bail!("empty prompt"), to_vec)
    }

    /// Runs one generated token; the logits after it. On a GGUF model the step is batched
    /// with the other sessions decoding at the same time.
    pub fn step(&mut self, token: u32) -> candle_core::Result<Vec<f32>> {
        let model = self.model;
        let logits = match (&model.net, &mut self.state) {
            (Net::Phi3(_) | Net::Qwen3Moe(_), State::Kv(cache)) => {
                if !std::mem::replace(&mut self.joined, true) {
                    model.batcher.join();
                }
                let run = |steps: &mut [(u32, &mut KvCaches)]| model.decode_batch(steps);
                return model.batcher.step(&run, cache, token);
            }
            (Net::Llava(m), State::Llama(cache, pos)) => {
                let l = m.forward_tokens(&[token], *pos, cache)?;
                *pos += 1;
                l
            }
            _ => candle_core::bail!("session state does not match the network"),
        };
        to_vec(logits)
    }

    /// Bytes of KV cache allocated so far (GGUF backends; `None` for LLaVA, whose cache is
    /// candle's Llama cache).
    pub fn kv_bytes(&self) -> Option<u64> {
        match &self.state {
            State::Kv(c) => Some(c.allocated_bytes()),
            State::Llama(..) => None,
        }
    }
}

fn to_vec(logits: Tensor) -> candle_core::Result<Vec<f32>> {
    logits.to_dtype(DType::F32)?.to_vec1()
}
