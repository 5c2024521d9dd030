//! What the GGUF decoders share: a per-request KV cache preallocated to the request's context,
//! causal attention over it with grouped-query heads, and the RMS norm of a GGUF vector.
//!
//! The weights of a loaded model are immutable and shared by every request; all per-request
//! state lives in a [`KvCaches`], so concurrent requests never see each other's tokens and
//! dropping a request frees its cache at once.

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::kv_cache::KvCache;

/// The KV caches of one request, one per layer, stored in one dtype (F16 by default on the
/// CPU: half the bytes of F32; attention itself runs in the queries' dtype).
pub struct KvCaches {
    layers: Vec<KvCache>,
    position: usize,
    capacity: usize,
    dtype: DType,
}

impl KvCaches {
    /// Caches for `layers` layers holding up to `capacity` tokens of keys and values stored
    /// as `dtype`. Each layer's buffers are allocated on its first append, at full capacity,
    /// so a request's cache never grows past what its context check allowed.
    pub fn new(layers: usize, capacity: usize, dtype: DType) -> Self {
        KvCaches {
            layers: (0..layers).map(|_| KvCache::new(2, capacity)).collect(),
            position: 0,
            capacity,
            dtype,
        }
    }

    /// Tokens already in the cache (the position of the next one).
    pub fn position(&self) -> usize {
        self.position
    }

    /// How keys and values are stored.
    pub fn dtype(&self) -> DType {
        self.dtype
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

    pub(crate) fn layer(&mut self, i: usize) -> LayerCache<'_> {
        LayerCache {
            cache: &mut self.layers[i],
            dtype: self.dtype,
        }
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

/// One layer's cache and the dtype it stores.
pub struct LayerCache<'a> {
    cache: &'a mut KvCache,
    dtype: DType,
}

impl LayerCache<'_> {
    /// Appends `k`, `v` (converted to the cache's dtype) and returns every cached key and
    /// value, in the cache's dtype.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        self.cache.append(
            &k.to_dtype(self.dtype)?.contiguous()?,
            &v.to_dtype(self.dtype)?.contiguous()?,
        )
    }
}

/// New tokens up to which a step attends with [`quant_kernels::attention`] (an F16 cache on
/// the CPU): decoding steps. Longer prefills go through candle's matmuls, which block the
/// work for the cache better when every row sees hundreds of tokens.
const KERNEL_ROWS: usize = 8;

/// Attention of `q` `[1, heads, len, d]` over an F16 CPU cache (`k`, `v` as the cache returns
/// them: `[1, kv_heads, tokens, d]` views of its buffers) with the kernels; `None` when the
/// tensors are not laid out that way.
fn attend_on_cache(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    let (b, heads, len, d) = q.dims4()?;
    if b != 1 || len > KERNEL_ROWS || q.dtype() != DType::F32 || k.dtype() != DType::F16 {
        return Ok(None);
    }
    let queries: Vec<f32> = q.contiguous()?.flatten_all()?.to_vec1()?;
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (candle_core::Storage::Cpu(kc), candle_core::Storage::Cpu(vc)) = (&*ks, &*vs) else {
        return Ok(None);
    };
    let [_, kv_heads, tokens, _] = *kl.dims() else {
        return Ok(None);
    };
    let stride = kl.stride();
    if stride[3] != 1 || stride[2] != d || vl.stride() != stride || vl.dims() != kl.dims() {
        return Ok(None);
    }
    let cache = quant_kernels::attention::CachedHeads {
        keys: &kc.as_slice::<half::f16>()?[kl.start_offset()..],
        values: &vc.as_slice::<half::f16>()?[vl.start_offset()..],
        head_stride: stride[1],
        tokens,
        kv_heads,
        dim: d,
    };
    let out = quant_kernels::attention::attend(&cache, &queries, heads, 1.0 / (d as f32).sqrt());
    Tensor::from_vec(out, (1, len, heads * d), q.device()).map(Some)
}

/// `t` as `dtype`. An F16 cache view on the CPU (`[b, heads, tokens, d]`, each head's tokens
/// contiguous) is widened to F32 with `half`'s slice conversion, which uses F16C where the CPU
/// has it: candle's element-by-element cast took a tenth of a Phi-4 decoding step at 500
/// tokens of context.
fn widen(t: &Tensor, dtype: DType) -> Result<Tensor> {
    use half::slice::HalfFloatSliceExt;
    if t.dtype() != DType::F16 || dtype != DType::F32 || !t.device().is_cpu() {
        return t.to_dtype(dtype);
    }
    let (storage, layout) = t.storage_and_layout();
    let (dims, stride) = (layout.dims(), layout.stride());
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return t.to_dtype(dtype);
    };
    let [b, h, n, d] = dims else {
        return t.to_dtype(dtype);
    };
    if stride[3] != 1 || stride[2] != *d {
        return t.to_dtype(dtype);
    }
    let src = cpu.as_slice::<half::f16>()?;
    let run = n * d;
    let mut out = vec![0f32; b * h * run];
    for (i, dst) in out.chunks_exact_mut(run).enumerate() {
        let at = layout.start_offset() + (i / h) * stride[0] + (i % h) * stride[1];
        src[at..at + run].convert_to_f32_slice(dst);
    }
    drop(storage);
    Tensor::from_vec(out, dims.to_vec(), t.device())
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
///
/// A decoding step over an F16 cache on the CPU runs in [`quant_kernels::attention`].
/// Otherwise grouped-query heads are not repeated: the `heads / kv_heads` query heads that
/// share a key/value head are stacked as extra rows of one matmul against it, so a step reads
/// the cache once per key/value head instead of copying it once per query head.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: &mut LayerCache<'_>,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, heads, len, d) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let (k, v) = cache.append(k, v)?;
    if let Some(y) = attend_on_cache(q, &k, &v)? {
        return Ok(y);
    }
    let (k, v) = (widen(&k, q.dtype())?, widen(&v, q.dtype())?);
    let (k, v) = (k.contiguous()?, v.contiguous()?);
    let total = k.dim(2)?;
    let n_rep = heads / kv_heads;
    // [b, heads, len, d] → [b, kv_heads, n_rep·len, d]: query head h = kv·n_rep + r.
    let q = q.contiguous()?.reshape((b, kv_heads, n_rep * len, d))?;
    let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
    let scores = match mask {
        Some(m) => scores
            .reshape((b, kv_heads, n_rep, len, total))?
            .broadcast_add(m)?
            .reshape((b, kv_heads, n_rep * len, total))?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs
        .matmul(&v)?
        .reshape((b, heads, len, d))?
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

#[cfg(test)]
mod tests {
    use super::*;

    fn random(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        let mut x = seed;
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Attention over an F16 cache against the F32 one: prefill 9 tokens then 6 single steps,
    /// grouped-query heads, the outputs within F16's rounding of each other.
    #[test]
    fn f16_cache_attention_matches_f32() {
        let (heads, kv_heads, d) = (8, 2, 64);
        let mut caches: Vec<KvCaches> = [DType::F32, DType::F16]
            .map(|t| KvCaches::new(1, 32, t))
            .into();
        let mut worst = 0f32;
        let mut step = 0u64;
        for len in [9, 1, 1, 1, 1, 1, 1] {
            step += 1;
            let q = random((1, heads, len, d), step);
            let k = random((1, kv_heads, len, d), 100 + step);
            let v = random((1, kv_heads, len, d), 200 + step);
            let offset = caches[0].position();
            let mask = causal_mask(len, offset, &Device::Cpu).unwrap();
            let outs: Vec<Vec<f32>> = caches
                .iter_mut()
                .map(|c| {
                    let y = attend(&q, &k, &v, &mut c.layer(0), mask.as_ref()).unwrap();
                    c.advance(len);
                    y.flatten_all().unwrap().to_vec1().unwrap()
                })
                .collect();
            for (a, b) in outs[0].iter().zip(&outs[1]) {
                worst = worst.max((a - b).abs());
            }
        }
        // Values of magnitude ≤ 2 stored with 11 significant bits: ≤ 2⁻¹⁰ each; attention
        // averages them.
        assert!(worst < 2e-3, "F16 cache moved attention outputs by {worst}");
        assert_eq!(caches[1].allocated_bytes() * 2, caches[0].allocated_bytes());
    }
}
