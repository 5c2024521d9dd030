//! Embedding networks, one module per family in the manner of candle-transformers: each has a
//! `Config` that deserializes the checkpoint's own `config.json` and a `Model` that loads from
//! a [`ModelDir`] and turns a padded batch into one vector per row.
//!
//! [`EmbeddingModel`] ties a family's network to its tokenizer ([`text`]), its limits and
//! normalization; it is what the pool holds while an embedder is loaded.

pub mod bert;
pub mod clip;
pub mod gte_qwen2;
pub mod jina;
mod kernel_weights;
pub mod nvembed;
pub mod qwen2;
pub mod stella;
pub mod text;

use std::fmt;
use std::str::FromStr;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use model_runtime::{BackendError, ModelDir};

use crate::image::ClipPreprocess;
use text::{Encoded, Overflow, Padded, TextEncoder, TextMode, TextRules, pad_right};

/// Limits of one batch (one forward pass under one lease) and of the queue in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most padded tokens (rows × longest row) in one forward pass, like TEI's
    /// `max_batch_tokens`. Raised to the input limit if lower, so every input fits.
    pub max_batch_tokens: usize,
    /// Most inputs (texts or images) in one forward pass.
    pub max_batch_size: usize,
    /// Most requests waiting for the model; more are refused as busy.
    pub max_queued: usize,
}

impl Default for BatchLimits {
    /// 8192 tokens and 64 inputs per batch, 256 queued requests.
    fn default() -> Self {
        BatchLimits {
            max_batch_tokens: 8192,
            max_batch_size: 64,
            max_queued: 256,
        }
    }
}

/// Groups of indices into `items`, each one forward pass within `limits`: sorted by length,
/// longest first, each group's rows × its longest row ≤ `max_batch_tokens`.
pub fn pack(items: &[&Encoded], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].len()));
    let mut groups = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let len = items[i].len().max(1);
        let fits = current.len() < limits.max_batch_size.max(1)
            && (current.len() + 1) * longest.max(len) <= limits.max_batch_tokens.max(len);
        if !fits {
            groups.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(len);
        current.push(i);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// What [`EmbeddingModel::load`] needs besides the files.
#[derive(Debug, Clone)]
pub struct EncoderParams {
    /// The key requests use (named in errors).
    pub key: String,
    /// The family.
    pub family: Family,
    /// Weight and activation dtype.
    pub dtype: DType,
    /// Most tokens per input, special tokens included; `None`: the model's own limit
    /// (`sentence_bert_config.json`, else its config).
    pub max_input_tokens: Option<usize>,
    /// Long inputs are truncated or refused.
    pub overflow: Overflow,
    /// L2-normalize embeddings (TEI and the Sentence-Transformers `Normalize` module do).
    pub normalize: bool,
    /// Instruction prefixed to queries, if the model has one.
    pub query_instruction: Option<String>,
    /// Batching limits.
    pub batch: BatchLimits,
}

/// The backend code a model runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// BERT with mean pooling (all-MiniLM-L6-v2).
    Bert,
    /// Qwen2 encoder + mean pooling + the Sentence-Transformers Dense head (Stella v5).
    Stella,
    /// Qwen2 encoder with last-token pooling and an instruction for queries (GTE-Qwen2).
    GteQwen2,
    /// JinaBERT with ALiBi and mean pooling (Jina v2).
    JinaBert,
    /// Bidirectional Mistral + latent-attention pooling (NV-Embed-v2).
    NvEmbed,
    /// CLIP text and vision towers with their projections.
    Clip,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 6] = [
        Family::Bert,
        Family::Stella,
        Family::GteQwen2,
        Family::JinaBert,
        Family::NvEmbed,
        Family::Clip,
    ];

    /// Lower-case name (CLI spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Stella => "stella",
            Family::GteQwen2 => "gte-qwen2",
            Family::JinaBert => "jina-bert",
            Family::NvEmbed => "nv-embed",
            Family::Clip => "clip",
        }
    }

    /// The family of a checkpoint, from its `config.json` (and, for Qwen2, whether it has a
    /// Sentence-Transformers Dense head).
    pub fn detect(dir: &ModelDir) -> Result<Family, BackendError> {
        #[derive(Deserialize)]
        struct Probe {
            model_type: Option<String>,
            position_embedding_type: Option<String>,
            #[serde(default)]
            text_config: Option<serde_json::Value>,
            #[serde(default)]
            vision_config: Option<serde_json::Value>,
        }
        let p: Probe = dir.json("config.json", "the model configuration")?;
        let unknown = |why: String| BackendError::UnknownFamily {
            key: dir.root().display().to_string(),
            why,
        };
        match p.model_type.as_deref() {
            Some("bert") if p.position_embedding_type.as_deref() == Some("alibi") => {
                Ok(Family::JinaBert)
            }
            Some("bert") => Ok(Family::Bert),
            Some("qwen2") => Ok(if dir.st_module_path("Dense")?.is_some() {
                Family::Stella
            } else {
                Family::GteQwen2
            }),
            Some("nvembed") => Ok(Family::NvEmbed),
            Some("clip") => Ok(Family::Clip),
            None if p.text_config.is_some() && p.vision_config.is_some() => Ok(Family::Clip),
            other => Err(unknown(format!(
                "config.json model_type {other:?} is not bert, qwen2, nvembed or clip"
            ))),
        }
    }

    /// Whether the family embeds images.
    pub fn embeds_images(self) -> bool {
        self == Family::Clip
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Family::ALL.iter().map(|f| f.as_str()).collect();
                format!("unknown family `{s}`; expected one of {}", names.join(", "))
            })
    }
}

/// A family's network.
enum Net {
    Bert(bert::Model),
    Stella(stella::Model),
    GteQwen2(gte_qwen2::Model),
    JinaBert(jina::Model),
    NvEmbed(nvembed::Model),
    Clip(clip::Model),
}

/// A loaded embedding model: network, tokenizer, limits.
pub struct EmbeddingModel {
    key: String,
    family: Family,
    text: TextEncoder,
    net: Net,
    device: Device,
    dtype: DType,
    normalize: bool,
    dim: usize,
    batch: BatchLimits,
    preprocess: Option<ClipPreprocess>,
}

impl fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("key", &self.key)
            .field("family", &self.family)
            .field("dtype", &self.dtype)
            .field("dim", &self.dim)
            .field("limit", &self.text.limit())
            .finish()
    }
}

/// What a family module hands back from loading.
pub(crate) struct Parts {
    net: Net,
    own_limit: usize,
    dim: usize,
    rules: TextRules,
    preprocess: Option<ClipPreprocess>,
}

impl EmbeddingModel {
    /// Loads the checkpoint in `dir` on `device` (blocking: reads the weights).
    pub fn load(dir: &ModelDir, p: &EncoderParams, device: &Device) -> Result<Self, BackendError> {
        let (family, dtype) = (p.family, p.dtype);
        let own = own_limit(dir, family)?;
        let limit = p.max_input_tokens.map_or(own, |r| r.min(own));
        let parts = match family {
            Family::Bert => bert::Model::load(dir, dtype, device)?.into_parts(),
            Family::Stella => stella::Model::load(dir, limit, dtype, device)?.into_parts(),
            Family::GteQwen2 => gte_qwen2::Model::load(dir, limit, dtype, device)?.into_parts(),
            Family::JinaBert => jina::Model::load(dir, limit, dtype, device)?.into_parts(),
            Family::NvEmbed => nvembed::Model::load(dir, limit, dtype, device)?.into_parts(),
            Family::Clip => {
                let (model, preprocess) = clip::Model::load(dir, dtype, device)?;
                clip::parts(model, preprocess)
            }
        };
        let mut rules = parts.rules;
        rules.query_instruction = p.query_instruction.clone();
        let limit = limit.min(parts.own_limit);
        let text = TextEncoder::from_file(
            &dir.file("tokenizer.json", "the tokenizer")?,
            limit,
            p.overflow,
            rules,
        )?;
        let mut batch = p.batch;
        batch.max_batch_tokens = batch.max_batch_tokens.max(limit);
        batch.max_batch_size = batch.max_batch_size.max(1);
        Ok(EmbeddingModel {
            key: p.key.clone(),
            family,
            text,
            net: parts.net,
            device: device.clone(),
            dtype,
            normalize: p.normalize,
            dim: parts.dim,
            batch,
            preprocess: parts.preprocess,
        })
    }

    /// The key requests use.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Length of the embeddings.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Most tokens per input.
    pub fn max_input_tokens(&self) -> usize {
        self.text.limit()
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Batching limits in effect.
    pub fn batch_limits(&self) -> BatchLimits {
        self.batch
    }

    /// The tokenizer with its serving rules.
    pub fn text_encoder(&self) -> &TextEncoder {
        &self.text
    }

    /// Tokenizes `texts` with the model's limits.
    pub fn tokenize(
        &self,
        texts: &[String],
        mode: &TextMode,
    ) -> Result<Vec<Encoded>, model_runtime::error::InputError> {
        self.text.encode(texts, mode)
    }

    /// One forward pass over `batch` (already within the batch limits); one vector per row.
    pub fn forward_tokens(&self, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>, BackendError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let pad = self.text.pad_id();
        let pooled = match &self.net {
            // JinaBERT has no attention mask: rows of equal length only, so padding never
            // leaks into a result.
            Net::JinaBert(m) => return self.finish(m.forward_unpadded(batch, &self.device)?),
            Net::Bert(m) => m.forward(&pad_right(batch, pad, &self.device)?)?,
            Net::Stella(m) => m.forward(&pad_right(batch, pad, &self.device)?)?,
            Net::GteQwen2(m) => m.forward(&pad_right(batch, pad, &self.device)?)?,
            Net::NvEmbed(m) => m.forward(&pad_right(batch, pad, &self.device)?)?,
            Net::Clip(m) => m.forward_text(&pad_right(batch, pad, &self.device)?)?,
        };
        self.finish(pooled)
    }

    /// One forward pass over images (CLIP only).
    pub fn forward_images(
        &self,
        images: &[::image::DynamicImage],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let (Net::Clip(m), Some(pre)) = (&self.net, &self.preprocess) else {
            return Err(BackendError::UnknownFamily {
                key: self.key.clone(),
                why: format!("the {} family embeds text only, not images", self.family),
            });
        };
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let pixels = pre.tensor(images, &self.device, self.dtype)?;
        let pooled = m.forward_images(&pixels)?;
        self.finish(pooled)
    }

    /// Embeds `texts` directly, without the pool (for benchmarks and tools): tokenizes, packs
    /// batches within the limits and runs them one after the other.
    pub fn embed_texts(
        &self,
        texts: &[String],
        mode: &TextMode,
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let encoded = self.tokenize(texts, mode)?;
        let refs: Vec<&Encoded> = encoded.iter().collect();
        let mut out = vec![Vec::new(); encoded.len()];
        for group in pack(&refs, self.batch) {
            let rows: Vec<&Encoded> = group.iter().map(|&i| refs[i]).collect();
            let vectors = self.forward_tokens(&rows)?;
            for (i, v) in group.into_iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Normalizes (if configured) and copies out `[rows, dim]`.
    fn finish(&self, pooled: Tensor) -> Result<Vec<Vec<f32>>, BackendError> {
        let pooled = pooled.to_dtype(DType::F32)?;
        let pooled = if self.normalize {
            l2_normalize(&pooled)?
        } else {
            pooled
        };
        Ok(pooled.to_vec2::<f32>()?)
    }
}

impl Parts {
    fn new(net: Net, own_limit: usize, dim: usize, rules: TextRules) -> Self {
        Parts {
            net,
            own_limit,
            dim,
            rules,
            preprocess: None,
        }
    }
}

/// The model's own input limit in tokens: Sentence-Transformers' `max_seq_length` if present,
/// else the smaller of the tokenizer's `model_max_length` and what the family's config allows.
pub fn own_limit(dir: &ModelDir, family: Family) -> Result<usize, BackendError> {
    if let Some(n) = dir.st_max_seq_length()? {
        return Ok(n);
    }
    #[derive(Deserialize)]
    struct TokenizerConfig {
        model_max_length: Option<f64>,
    }
    let from_tokenizer = dir
        .optional_json::<TokenizerConfig>("tokenizer_config.json")?
        .and_then(|t| t.model_max_length)
        // Transformers writes 1e30 for "no limit".
        .filter(|n| (1.0..1e9).contains(n))
        .map(|n| n as usize);
    let from_config = match family {
        Family::Bert => bert::Config::read(dir)?.sizes.max_position_embeddings,
        Family::Stella => stella::Config::read(dir)?.max_position_embeddings,
        Family::GteQwen2 => gte_qwen2::Config::read(dir)?.qwen2.max_position_embeddings,
        Family::JinaBert => jina::Config::read(dir)?.sizes.max_position_embeddings,
        Family::NvEmbed => {
            nvembed::Config::read(dir)?
                .text_config
                .max_position_embeddings
        }
        Family::Clip => clip::Config::read(dir)?.text_config.max_position_embeddings,
    };
    Ok(from_tokenizer.map_or(from_config, |t| t.min(from_config)))
}

/// `vb` positioned so that `probe` resolves: as is, or under the first of `prefixes` that
/// holds it (checkpoints saved from `…ForMaskedLM` or `…ForCausalLM` wrap the encoder in one).
pub(crate) fn rooted<'a>(vb: VarBuilder<'a>, probe: &str, prefixes: &[&str]) -> VarBuilder<'a> {
    if vb.contains_tensor(probe) {
        return vb;
    }
    for p in prefixes {
        if vb.contains_tensor(&format!("{p}.{probe}")) {
            return vb.pp(*p);
        }
    }
    vb
}

/// For candle modules that read `model.*`: strips that prefix when the file has none.
pub(crate) fn with_model_prefix(vb: VarBuilder<'static>, probe: &str) -> VarBuilder<'static> {
    if vb.contains_tensor(&format!("model.{probe}")) || !vb.contains_tensor(probe) {
        return vb;
    }
    vb.rename_f(|name| name.strip_prefix("model.").unwrap_or(name).to_owned())
}

/// Mean over the rows of `hidden` `[b, l, h]` where `mask` `[b, l]` (f32) is 1.
pub(crate) fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let hidden = hidden.to_dtype(DType::F32)?;
    let mask = mask.to_dtype(DType::F32)?;
    let summed = hidden.broadcast_mul(&mask.unsqueeze(D::Minus1)?)?.sum(1)?;
    let counts = mask.sum_keepdim(1)?;
    summed.broadcast_div(&counts)
}

/// [`mean_pool`] of token states laid end to end without padding (`hidden`: `[T, width]`, the
/// rows of `batch` in order), `[rows, width]`.
pub(crate) fn mean_pool_rows(
    hidden: &[f32],
    width: usize,
    batch: &Batch,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let pool = batch.pool_mask.to_vec2::<f32>()?;
    let mut pooled = Vec::with_capacity(batch.lens.len() * width);
    let mut start = 0;
    for (mask, &len) in pool.iter().zip(&batch.lens) {
        // The pooled tokens are one run: from the first to the last marked one.
        let from = mask[..len].iter().position(|&m| m > 0.0).unwrap_or(0);
        let to = mask[..len]
            .iter()
            .rposition(|&m| m > 0.0)
            .map_or(from, |i| i + 1);
        debug_assert!(mask[from..to].iter().all(|&m| m > 0.0));
        encoder_kernels::bert::mean_rows(hidden, width, start + from, start + to, &mut pooled);
        start += len;
    }
    Tensor::from_vec(pooled, (batch.lens.len(), width), device)
}

/// Token states laid end to end (`tokens`: `[T, hidden]`, each row's `(start, len)` in
/// `spans`) as a right-padded `[rows, width, hidden]` tensor, zeros in the padding.
pub(crate) fn padded_tokens(
    tokens: &[f32],
    spans: &[(usize, usize)],
    width: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let total: usize = spans.iter().map(|s| s.1).sum();
    let hidden = tokens.len() / total.max(1);
    let mut padded = vec![0f32; spans.len() * width * hidden];
    for (r, &(start, len)) in spans.iter().enumerate() {
        padded[r * width * hidden..(r * width + len) * hidden]
            .copy_from_slice(&tokens[start * hidden..(start + len) * hidden]);
    }
    Tensor::from_vec(padded, (spans.len(), width, hidden), device)
}

/// Row `lens[i] - 1` of each `hidden[i]`: the last real token.
pub(crate) fn last_token(hidden: &Tensor, lens: &[usize]) -> candle_core::Result<Tensor> {
    use candle_core::IndexOp;
    let rows = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| hidden.i((i, len - 1)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::stack(&rows, 0)
}

/// `v / ‖v‖₂` per row.
pub(crate) fn l2_normalize(v: &Tensor) -> candle_core::Result<Tensor> {
    let norm = v.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    // A zero row stays zero instead of becoming NaN.
    let norm = norm.maximum(1e-12)?;
    v.broadcast_div(&norm)
}

/// `serde(default)` helpers shared by the configs.
pub(crate) mod defaults {
    pub fn f64_1e_12() -> f64 {
        1e-12
    }
    pub fn f64_1e_5() -> f64 {
        1e-5
    }
    pub fn f64_1e_6() -> f64 {
        1e-6
    }
    pub fn two() -> usize {
        2
    }
    pub fn yes() -> bool {
        true
    }
    pub fn silu() -> candle_nn::Activation {
        candle_nn::Activation::Silu
    }
}

/// A padded batch, for family modules.
pub(crate) type Batch = Padded;

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(n: usize) -> Encoded {
        Encoded {
            ids: vec![1; n],
            pool_from: 0,
            truncated: false,
        }
    }

    #[test]
    fn packing_respects_the_token_budget_and_the_batch_size() {
        let items: Vec<Encoded> = [5, 100, 7, 100, 60, 3, 64].into_iter().map(enc).collect();
        let refs: Vec<&Encoded> = items.iter().collect();
        let limits = BatchLimits {
            max_batch_tokens: 200,
            max_batch_size: 3,
            max_queued: 1,
        };
        let groups = pack(&refs, limits);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..items.len()).collect::<Vec<_>>(),
            "every item exactly once"
        );
        for g in &groups {
            let longest = g.iter().map(|&i| items[i].len()).max().unwrap();
            assert!(g.len() <= 3 && g.len() * longest <= 200, "{g:?}");
        }
        // Longest first: the two 100-token texts share the first pass.
        assert_eq!(groups[0], vec![1, 3]);
    }

    #[test]
    fn an_input_longer_than_the_budget_still_gets_its_own_pass() {
        let items = [enc(300), enc(10)];
        let refs: Vec<&Encoded> = items.iter().collect();
        let groups = pack(
            &refs,
            BatchLimits {
                max_batch_tokens: 100,
                max_batch_size: 8,
                max_queued: 1,
            },
        );
        assert_eq!(groups, vec![vec![0], vec![1]]);
    }
}
