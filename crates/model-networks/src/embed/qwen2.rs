//! The Qwen2 `config.json` fields both Qwen2 encoders read, [`super::stella`] and
//! [`super::gte_qwen2`]: the sizes, RoPE, norm and activation of the network; and the weights
//! of a Qwen2 or Mistral body (NV-Embed's is Mistral) read into [`encoder_kernels::qwen2`].

use candle_nn::VarBuilder;
use serde::Deserialize;

use super::{Batch, defaults, kernel_weights};
use model_runtime::{BackendError, ModelDir};

/// A Qwen2 `config.json` (the fields both encoders read; GTE-Qwen2 adds its sliding-window
/// ones).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Qwen2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    pub num_key_value_heads: usize,
    /// Positions the model was trained for.
    pub max_position_embeddings: usize,
    /// RoPE base (1 000 000 when absent).
    #[serde(default = "rope_theta")]
    pub rope_theta: f64,
    /// RMS norm epsilon.
    #[serde(default = "defaults::f64_1e_6")]
    pub rms_norm_eps: f64,
    /// Feed-forward activation.
    #[serde(default = "defaults::silu")]
    pub hidden_act: candle_nn::Activation,
}

fn rope_theta() -> f64 {
    1_000_000.0
}

impl Qwen2Config {
    /// Reads `config.json`.
    pub fn read(dir: &ModelDir) -> Result<Self, BackendError> {
        dir.json("config.json", "the Qwen2 configuration")
    }

    /// The architecture values the memory estimator reads.
    pub fn spec_architecture(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("hidden_size", self.hidden_size as u64),
            ("num_hidden_layers", self.num_hidden_layers as u64),
            ("num_attention_heads", self.num_attention_heads as u64),
            ("num_key_value_heads", self.num_key_value_heads as u64),
            // candle's Qwen2 has no separate head size: it is hidden / heads.
            (
                "head_dim",
                (self.hidden_size / self.num_attention_heads.max(1)) as u64,
            ),
            ("intermediate_size", self.intermediate_size as u64),
            ("vocab_size", self.vocab_size as u64),
        ]
    }

    /// Whether the kernels can run this body.
    pub(crate) fn kernels_can(&self) -> bool {
        self.body().is_ok_and(|b| b.kernels_refuse().is_none())
    }

    /// The body's sizes for the kernels (Qwen2 has query/key/value biases), or why the
    /// kernels cannot run it.
    pub(crate) fn body(&self) -> Result<Body, String> {
        let (h, heads) = (self.hidden_size, self.num_attention_heads);
        if heads == 0 || !h.is_multiple_of(heads) {
            return Err(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {heads}"
            ));
        }
        Ok(Body {
            vocab: self.vocab_size,
            hidden: h,
            heads,
            kv_heads: self.num_key_value_heads,
            head_dim: h / heads,
            intermediate: self.intermediate_size,
            layers: self.num_hidden_layers,
            rope_theta: self.rope_theta,
            eps: self.rms_norm_eps,
            act: self.hidden_act,
            qkv_bias: true,
        })
    }
}

/// The sizes of a Qwen2 or Mistral body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Body {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub rope_theta: f64,
    pub eps: f64,
    pub act: candle_nn::Activation,
    /// Whether q, k and v carry biases (Qwen2 yes, Mistral no).
    pub qkv_bias: bool,
}

impl Body {
    /// Why the kernels cannot run this body, if they cannot.
    pub(crate) fn kernels_refuse(&self) -> Option<String> {
        let (heads, kv, d) = (self.heads, self.kv_heads, self.head_dim);
        if self.act != candle_nn::Activation::Silu {
            Some(format!(
                "hidden_act {:?}: the Qwen2/Mistral CPU kernels run SiLU only",
                self.act
            ))
        } else if heads == 0 || kv == 0 || !heads.is_multiple_of(kv) {
            Some(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}"
            ))
        } else if d == 0 || !d.is_multiple_of(2) {
            Some(format!("head_dim {d} is not a positive even number (RoPE)"))
        } else {
            None
        }
    }

    /// The weights of `vb` (rooted at the body: `embed_tokens`, `layers.N`, `norm`) laid out
    /// for [`encoder_kernels::qwen2`], with RoPE tables for `positions` positions. Called
    /// only when [`kernels_refuse`](Self::kernels_refuse) is `None`.
    fn kernel_encoder(
        &self,
        vb: &VarBuilder<'static>,
        positions: usize,
    ) -> candle_core::Result<encoder_kernels::qwen2::Encoder> {
        let (h, d, inter) = (self.hidden, self.head_dim, self.intermediate);
        let (q_width, kv_width) = (self.heads * d, self.kv_heads * d);
        // The token table first: reading a tensor holds it twice for a moment, and this one is
        // the largest (0.9 GB in Qwen2-1.5B); read last, that moment came on top of every
        // layer and took the load past the model's declared memory.
        let tokens = kernel_weights::read(vb, &[self.vocab, h], "embed_tokens.weight")?;
        let layers = (0..self.layers)
            .map(|i| {
                let l = vb.pp(format!("layers.{i}"));
                let (a, m) = (l.pp("self_attn"), l.pp("mlp"));
                let (q, k, v) = (a.pp("q_proj"), a.pp("k_proj"), a.pp("v_proj"));
                let (gate, up) = (m.pp("gate_proj"), m.pp("up_proj"));
                Ok(encoder_kernels::qwen2::Layer {
                    attn_norm: kernel_weights::read(&l.pp("input_layernorm"), &[h], "weight")?,
                    qkv: kernel_weights::stacked(
                        &[(&q, q_width), (&k, kv_width), (&v, kv_width)],
                        h,
                        self.qkv_bias,
                    )?,
                    out: kernel_weights::linear(&a.pp("o_proj"), h, q_width, false)?,
                    ffn_norm: kernel_weights::read(
                        &l.pp("post_attention_layernorm"),
                        &[h],
                        "weight",
                    )?,
                    gate_up: kernel_weights::stacked(&[(&gate, inter), (&up, inter)], h, false)?,
                    down: kernel_weights::linear(&m.pp("down_proj"), h, inter, false)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (cos, sin) =
            encoder_kernels::qwen2::Encoder::rope_tables(positions, d, self.rope_theta);
        Ok(encoder_kernels::qwen2::Encoder {
            hidden: h,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: d,
            eps: self.eps as f32,
            tokens,
            layers,
            final_norm: kernel_weights::read(&vb.pp("norm"), &[h], "weight")?,
            cos,
            sin,
        })
    }
}

/// The kernels' encoder for the body `vb` of the checkpoint in `dir` (f32 on the CPU only),
/// with RoPE tables for `positions` positions; `body` is the config's sizes or why they do
/// not make a body. Errors name the file and what to do.
pub(crate) fn kernel_body(
    dir: &ModelDir,
    body: Result<Body, String>,
    vb: &VarBuilder<'static>,
    positions: usize,
) -> Result<encoder_kernels::qwen2::Encoder, BackendError> {
    let body = body
        .and_then(|b| b.kernels_refuse().map_or(Ok(b), Err))
        .map_err(|why| {
            BackendError::config(
                dir.root().join("config.json"),
                format!("{why}; load with the candle backend"),
            )
        })?;
    kernel_weights::check_f32_cpu(dir, vb)?;
    body.kernel_encoder(vb, positions)
        .map_err(|e| kernel_weights::weights_error(dir, e))
}

/// Token states rows end to end (`[T, hidden]`) and each row's `(start, len)` in tokens.
pub(crate) type TokenStates = (Vec<f32>, Vec<(usize, usize)>);

/// The final-normed state of every real token of `batch` from the kernels, rows end to end
/// (`[T, hidden]`), and each row's `(start, len)` in tokens.
pub(crate) fn kernel_tokens(
    encoder: &encoder_kernels::qwen2::Encoder,
    batch: &Batch,
) -> candle_core::Result<TokenStates> {
    let ids = batch.unpadded_ids()?;
    let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    Ok(encoder.forward_tokens(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_refuse_bodies_they_cannot_run_and_say_why() {
        let qwen2: Qwen2Config = serde_json::from_value(serde_json::json!({
            "vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64
        }))
        .unwrap();
        let body = qwen2.body().unwrap();
        assert_eq!((body.head_dim, body.qkv_bias), (8, true));
        assert_eq!(body.kernels_refuse(), None);
        let why = |b: Body| b.kernels_refuse().unwrap_or_default();
        let gelu = Body {
            act: candle_nn::Activation::GeluPytorchTanh,
            ..body.clone()
        };
        assert!(why(gelu).contains("SiLU"));
        assert!(
            why(Body {
                kv_heads: 3,
                ..body.clone()
            })
            .contains("num_key_value_heads 3")
        );
        assert!(
            why(Body {
                head_dim: 7,
                ..body.clone()
            })
            .contains("head_dim 7")
        );
        let uneven = Qwen2Config {
            num_attention_heads: 5,
            ..qwen2
        };
        assert!(uneven.body().unwrap_err().contains("num_attention_heads 5"));
    }
}
