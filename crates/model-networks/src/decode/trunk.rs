//! The skeleton both GGUF decoders share: the token embedding, a stack of one family's layers,
//! the final RMS norm and output head, and RoPE tables for the configured positions.
//!
//! A family module ([`super::phi3`], [`super::qwen3_moe`]) parses its hyper-parameters and
//! implements [`DecoderLayer`] for its layer (attention and feed-forward); its `Model` is a
//! [`DecoderTrunk`] of those layers. The trunk loads the shared tensors, runs the forward
//! pass around the layers and owns none of the per-request state, which lives in
//! [`KvCaches`].

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_transformers::models::quantized_qwen3::RotaryEmbedding;

use super::attention::{self, KvCaches, LayerCache, RmsNorm};
use super::qlinear::{QLinear, TokenEmbedding};
use model_runtime::{BackendError, GgufFile};

/// What the trunk needs to know of a family's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrunkShape {
    /// Layers (`blk.0` … `blk.{layers - 1}`).
    pub layers: usize,
    /// Hidden size: the width of `token_embd`.
    pub hidden: usize,
    /// Rotary dimensions per head.
    pub rope_dim: usize,
    /// RoPE base.
    pub rope_base: f64,
    /// Epsilon of every RMS norm.
    pub rms_eps: f64,
    /// Positions the model was trained for.
    pub context_length: usize,
    /// Whether a file without `output.weight` uses `token_embd.weight` as its output head
    /// (tied embeddings); else `output.weight` is required.
    pub tied_embeddings: bool,
}

/// One family's transformer layer: the part of a GGUF decoder that differs between families.
pub trait DecoderLayer: Sized {
    /// The family's hyper-parameters.
    type Config;

    /// Reads the hyper-parameters of `f`, checking that it is of this family.
    fn read_config(f: &GgufFile) -> std::result::Result<Self::Config, BackendError>;

    /// What the trunk needs of `config`.
    fn shape(config: &Self::Config) -> TrunkShape;

    /// Loads layer `index` (the tensors `blk.{index}.*`).
    fn load(
        weights: &mut GgufWeights<'_>,
        config: &Self::Config,
        index: usize,
    ) -> std::result::Result<Self, BackendError>;

    /// Runs the layer on the hidden states `x` `[1, rows, hidden]` of `step`'s tokens, with
    /// this layer's cache of each sequence in the step (`caches`, in the step's order);
    /// returns the new hidden states. Matrices are applied through [`Step::linear`] and
    /// attention through [`Step::attention`], so that a batch of sequences gets each row
    /// computed as it would be alone.
    fn forward(
        &self,
        config: &Self::Config,
        x: &Tensor,
        step: &Step<'_>,
        caches: &mut [LayerCache<'_>],
    ) -> Result<Tensor>;
}

/// The tensors of a GGUF file, read onto one device in the forms the decoders use.
pub struct GgufWeights<'a> {
    /// The file.
    pub file: &'a mut GgufFile,
    /// Where the tensors go.
    pub device: &'a Device,
    rms_eps: f64,
}

impl GgufWeights<'_> {
    /// Tensor `name` as a (possibly quantized) matrix, held once.
    pub(crate) fn matmul(&mut self, name: &str) -> std::result::Result<QLinear, BackendError> {
        QLinear::load(self.file, name, self.device)
    }

    /// Each expert's matrix of the stacked tensor `name`.
    pub(crate) fn experts(
        &mut self,
        name: &str,
    ) -> std::result::Result<Vec<QLinear>, BackendError> {
        QLinear::load_experts(self.file, name, self.device)
    }

    /// Tensor `name` as the weight of an RMS norm with the model's epsilon.
    pub(crate) fn norm(&mut self, name: &str) -> std::result::Result<RmsNorm, BackendError> {
        Ok(RmsNorm::new(
            self.file.tensor(name, self.device)?,
            self.rms_eps,
        )?)
    }
}

/// Query and key/value head counts and the width of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub query: usize,
    /// Key/value heads.
    pub kv: usize,
    /// Width of one head.
    pub dim: usize,
}

/// One sequence's rows in a step.
struct Segment {
    /// First row of the step that is this sequence's.
    start: usize,
    /// Its new tokens.
    len: usize,
    /// Tokens its cache held before the step.
    offset: usize,
    /// Its causal mask (`None` for one token).
    mask: Option<Tensor>,
}

/// What every layer of one forward step shares: where each sequence's new tokens stand,
/// their causal masks and the RoPE tables.
///
/// A step is either one sequence's tokens (a prefill chunk or a decoding step) or a batch of
/// decoding steps of several sequences, one row each. In a batch every row is computed
/// exactly as it would be alone: matrices are applied to the batch only where the kernel
/// treats rows independently (the quantized kernels' row path), else row by row, and each
/// sequence attends over its own cache at its own position.
pub struct Step<'a> {
    segments: Vec<Segment>,
    rope: &'a RotaryEmbedding,
    batch: bool,
}

impl Step<'_> {
    /// `x · Wᵀ` for every row of `x` `[1, rows, in]`.
    pub(crate) fn linear(&self, w: &QLinear, x: &Tensor) -> Result<Tensor> {
        if self.batch && !w.rows_are_independent(x.dim(1)?) {
            return each_row(x, 1, |row| w.forward(row));
        }
        w.forward(x)
    }

    /// `f` applied to every row of `x` `[rows, n]` (a batch: one row at a time, so that a
    /// dense matmul gives each row the result it has alone).
    pub(crate) fn rows(&self, x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        if !self.batch {
            return f(x);
        }
        each_row(x, 0, f)
    }

    /// Causal self-attention of each sequence in the step over its cache (which it appends
    /// to): `q` `[1, rows, query·dim]`, `k` and `v` `[1, rows, kv·dim]`; `norm` (the per-head
    /// query and key norms, Qwen3) is applied before RoPE. Returns `[1, rows, query·dim]`.
    pub(crate) fn attention(
        &self,
        heads: Heads,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        norm: Option<(&RmsNorm, &RmsNorm)>,
        caches: &mut [LayerCache<'_>],
    ) -> Result<Tensor> {
        let split = |t: &Tensor, s: &Segment, n: usize| {
            t.narrow(1, s.start, s.len)?
                .reshape((1, s.len, n, heads.dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let mut out = Vec::with_capacity(self.segments.len());
        for (s, cache) in self.segments.iter().zip(caches.iter_mut()) {
            let (mut qs, mut ks) = (split(q, s, heads.query)?, split(k, s, heads.kv)?);
            let vs = split(v, s, heads.kv)?;
            if let Some((qn, kn)) = norm {
                qs = qn.forward(&qs)?;
                ks = kn.forward(&ks)?;
            }
            let (qs, ks) = self.rope.apply(&qs, &ks, s.offset)?;
            out.push(attention::attend(&qs, &ks, &vs, cache, s.mask.as_ref())?);
        }
        if out.len() == 1 {
            return Ok(out.pop().expect("one segment"));
        }
        Tensor::cat(&out, 1)
    }
}

/// `f` on each row of `x` (its rows along `dim`), the results put back together.
fn each_row(x: &Tensor, dim: usize, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let rows = (0..x.dim(dim)?)
        .map(|r| f(&x.narrow(dim, r, 1)?))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&rows, dim)
}

/// A loaded GGUF decoder of `L` layers. Immutable: share it between requests.
pub struct DecoderTrunk<L: DecoderLayer> {
    config: L::Config,
    embed: TokenEmbedding,
    layers: Vec<L>,
    output_norm: RmsNorm,
    output: QLinear,
    rope: RotaryEmbedding,
    positions: usize,
    device: Device,
}

impl<L: DecoderLayer> DecoderTrunk<L> {
    /// Loads the weights of `f` onto `device`, with RoPE tables for `positions` positions
    /// (capped at the model's `context_length`).
    pub fn load(
        f: &mut GgufFile,
        device: &Device,
        positions: usize,
    ) -> std::result::Result<Self, BackendError> {
        let config = L::read_config(f)?;
        let shape = L::shape(&config);
        let positions = positions.min(shape.context_length).max(1);
        let mut weights = GgufWeights {
            file: f,
            device,
            rms_eps: shape.rms_eps,
        };
        // Quantized on the CPU (rows expanded when looked up), F32 elsewhere; a file without
        // `output.weight` whose family ties them reuses the table as its output head.
        let tied = shape.tied_embeddings && !weights.file.has("output.weight");
        let (embed, tied_head) = TokenEmbedding::load(weights.file, device, shape.hidden, tied)?;
        let output_norm = weights.norm("output_norm.weight")?;
        let output = match tied_head {
            Some(head) => head,
            None => weights.matmul("output.weight")?,
        };
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            layers.push(L::load(&mut weights, &config, i)?);
        }
        let rope = RotaryEmbedding::new(
            DType::F32,
            shape.rope_dim,
            positions,
            shape.rope_base,
            device,
        )?;
        Ok(DecoderTrunk {
            config,
            embed,
            layers,
            output_norm,
            output,
            rope,
            positions,
            device: device.clone(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &L::Config {
        &self.config
    }

    /// Positions the RoPE tables cover: the longest context a request can have.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// An empty cache for a request of up to `tokens` tokens, stored as `dtype`.
    pub fn new_cache(&self, tokens: usize, dtype: DType) -> KvCaches {
        KvCaches::new(self.layers.len(), tokens.min(self.positions), dtype)
    }

    /// Runs `tokens` after what `cache` holds and returns the logits of the last one
    /// (`[vocab]`, F32).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCaches) -> Result<Tensor> {
        let mut logits = self.run(&mut [(tokens, cache)], false)?;
        Ok(logits.pop().expect("one sequence"))
    }

    /// One decoding step of several sequences at once: each `(token, cache)` runs its token
    /// after what its cache holds. The weights are read once for the whole batch, and each
    /// sequence gets exactly the logits it would get from [`forward`](Self::forward) alone.
    pub fn decode_batch(&self, steps: &mut [(u32, &mut KvCaches)]) -> Result<Vec<Tensor>> {
        let tokens: Vec<[u32; 1]> = steps.iter().map(|(t, _)| [*t]).collect();
        let mut seqs: Vec<(&[u32], &mut KvCaches)> = tokens
            .iter()
            .zip(steps.iter_mut())
            .map(|(t, (_, c))| (&t[..], &mut **c))
            .collect();
        let batch = seqs.len() > 1;
        self.run(&mut seqs, batch)
    }

    /// Runs each sequence's tokens after its cache; the logits of each one's last token.
    fn run(&self, seqs: &mut [(&[u32], &mut KvCaches)], batch: bool) -> Result<Vec<Tensor>> {
        let mut segments = Vec::with_capacity(seqs.len());
        let mut all = Vec::new();
        for (tokens, cache) in seqs.iter() {
            let len = tokens.len();
            if len == 0 {
                candle_core::bail!("no tokens to run");
            }
            cache.check_room(len)?;
            let offset = cache.position();
            segments.push(Segment {
                start: all.len(),
                len,
                offset,
                mask: attention::causal_mask(len, offset, &self.device)?,
            });
            all.extend_from_slice(tokens);
        }
        let step = Step {
            segments,
            rope: &self.rope,
            batch,
        };
        let mut x = self.embed.forward(&all, &self.device)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let mut caches: Vec<LayerCache<'_>> =
                seqs.iter_mut().map(|(_, c)| c.layer(i)).collect();
            x = layer.forward(&self.config, &x, &step, &mut caches)?;
        }
        for (tokens, cache) in seqs.iter_mut() {
            cache.advance(tokens.len());
        }
        let last: Vec<Tensor> = step
            .segments
            .iter()
            .map(|s| x.narrow(1, s.start + s.len - 1, 1))
            .collect::<Result<_>>()?;
        let last = Tensor::cat(&last, 1)?;
        let logits = step.linear(&self.output, &self.output_norm.forward(&last)?)?;
        (0..step.segments.len())
            .map(|i| attention::last_position(&logits.narrow(1, i, 1)?))
            .collect()
    }
}

/// Fails unless `f`'s `general.architecture` is `expected`.
pub(crate) fn expect_architecture(
    f: &GgufFile,
    expected: &str,
) -> std::result::Result<(), BackendError> {
    let arch = f.architecture()?;
    if arch != expected {
        return Err(BackendError::config(
            &f.path,
            format!("general.architecture is `{arch}`, not `{expected}`"),
        ));
    }
    Ok(())
}

/// The vocabulary size: the rows of `token_embd.weight`.
pub(crate) fn vocab_size(f: &GgufFile) -> std::result::Result<usize, BackendError> {
    f.content
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims()[0])
        .ok_or_else(|| BackendError::config(&f.path, "tensor `token_embd.weight` is missing"))
}
