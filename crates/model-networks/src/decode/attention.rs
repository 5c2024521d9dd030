//! What the GGUF decoders share: a per-request KV cache preallocated to the request's context,
//! causal attention over it with grouped-query heads, and the RMS norm of a GGUF vector.
//!
//! The weights of a loaded model are immutable and shared by every request; all per-request
//! state lives in a [`KvCaches`], so concurrent requests never see each other's tokens and
//! dropping a request frees its cache at once.

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;

/// The KV caches of one request, one per layer.
pub struct KvCaches {
    layers: Vec<KvCache>,
    position: usize,
    capacity: usize,
}

impl KvCaches {
    /// Caches for `layers` layers holding up to `capacity` tokens. Each layer's buffers are
    /// allocated on its first append, at full capacity, so a request's cache never grows past
    /// what its context check allowed.
    pub fn new(layers: usize, capacity: usize) -> Self {
        KvCaches {
            layers: (0..layers).map(|_| KvCache::new(2, capacity)).collect(),
            position: 0,
            capacity,
        }
    }

    /// Tokens already in the cache (the position of the next one).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Tokens the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of the key and value buffers allocated so far.
    pub fn allocated_bytes(&self) -> u64 {
        let bytes = |c: &candle_nn::kv_cache::Cache| {
            c.all_data()
                .as_ref()
                .map_or(0, |t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
        };
        self.layers
            .iter()
            .map(|l| bytes(l.k_cache()) + bytes(l.v_cache()))
            .sum()
    }

    pub(crate) fn layer(&mut self, i: usize) -> &mut KvCache {
        &mut self.layers[i]
    }

    pub(crate) fn check_room(&self, tokens: usize) -> Result<()> {
        if self.position + tokens > self.capacity {
            candle_core::bail!(
                "KV cache full: {} + {tokens} tokens exceed its {} positions",
                self.position,
                self.capacity
            )
        }
        Ok(())
    }

    pub(crate) fn advance(&mut self, tokens: usize) {
        self.position += tokens;
    }
}

/// The additive causal mask of `len` new tokens after `offset` cached ones, or `None` for a
/// single token (it may see everything).
pub(crate) fn causal_mask(len: usize, offset: usize, device: &Device) -> Result<Option<Tensor>> {
    if len <= 1 {
        return Ok(None);
    }
    candle_transformers::utils::build_additive_causal_mask(len, offset, None, device, DType::F32)
        .map(Some)
}

/// Attention of `q` `[1, heads, len, d]` over the cached keys and values plus the new `k`, `v`
/// `[1, kv_heads, len, d]`; returns `[1, len, heads·d]`.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: &mut KvCache,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, heads, len, d) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let (k, v) = cache.append(&k.contiguous()?, &v.contiguous()?)?;
    let n_rep = heads / kv_heads;
    let k = candle_transformers::utils::repeat_kv(k, n_rep)?.contiguous()?;
    let v = candle_transformers::utils::repeat_kv(v, n_rep)?.contiguous()?;
    let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((b, len, heads * d))
}

/// An RMS norm whose weight is a GGUF vector (dequantized to F32 once).
#[derive(Debug, Clone)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn new(weight: QTensor, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: weight.dequantize(&weight.device())?,
            eps: eps as f32,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// SiLU(gate) · up.
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

/// The last position of `[1, len, vocab]` logits as `[vocab]` F32.
pub(crate) fn last_position(logits: &Tensor) -> Result<Tensor> {
    let len = logits.dim(1)?;
    logits
        .narrow(1, len - 1, 1)?
        .squeeze(1)?
        .squeeze(0)?
        .to_dtype(DType::F32)
}
