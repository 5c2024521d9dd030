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

    /// Runs the layer on the hidden states `x` `[1, len, hidden]` of `step`'s tokens, with this
    /// layer's `cache`; returns the new hidden states.
    fn forward(
        &self,
        config: &Self::Config,
        x: &Tensor,
        step: &Step<'_>,
        cache: &mut LayerCache<'_>,
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

/// What every layer of one forward step shares: where the new tokens stand, their causal mask
/// and the RoPE tables.
pub struct Step<'a> {
    len: usize,
    offset: usize,
    mask: Option<Tensor>,
    rope: &'a RotaryEmbedding,
}

impl Step<'_> {
    /// `t` `[1, len, n·head_dim]` split into `n` heads, `[1, n, len, head_dim]`.
    pub(crate) fn heads(&self, t: Tensor, n: usize, head_dim: usize) -> Result<Tensor> {
        t.reshape((1, self.len, n, head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Queries and keys rotated to the tokens' positions.
    pub(crate) fn rotate(&self, q: &Tensor, k: &Tensor) -> Result<(Tensor, Tensor)> {
        self.rope.apply(q, k, self.offset)
    }

    /// Causal attention of `q` over what `cache` holds plus the new `k` and `v` (which it
    /// appends); `[1, len, heads·head_dim]`.
    pub(crate) fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cache: &mut LayerCache<'_>,
    ) -> Result<Tensor> {
        attention::attend(q, k, v, cache, self.mask.as_ref())
    }
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
        let len = tokens.len();
        cache.check_room(len)?;
        let offset = cache.position();
        let mut x = self.embed.forward(tokens, &self.device)?;
        let step = Step {
            len,
            offset,
            mask: attention::causal_mask(len, offset, &self.device)?,
            rope: &self.rope,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&self.config, &x, &step, &mut cache.layer(i))?;
        }
        cache.advance(len);
        let last = x.narrow(1, len - 1, 1)?;
        let logits = self.output.forward(&self.output_norm.forward(&last)?)?;
        attention::last_position(&logits)
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
