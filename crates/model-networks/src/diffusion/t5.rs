//! The T5 v1.1 encoder (T5-XXL in both pipelines): candle-transformers' `T5EncoderModel`,
//! configured from the checkpoint's own `config.json`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::t5;
use parking_lot::Mutex;

use model_runtime::BackendError;
use model_runtime::model_dir::read_json;

/// Reads a T5 `config.json`.
pub fn read_config(path: &Path) -> Result<t5::Config, BackendError> {
    read_json(path)
}

/// The spec architecture values of a T5 config.
pub fn spec_architecture(c: &t5::Config) -> Vec<(&'static str, toml::Value)> {
    let i = |v: usize| toml::Value::Integer(v as i64);
    vec![
        ("d_model", i(c.d_model)),
        ("d_ff", i(c.d_ff)),
        ("num_layers", i(c.num_layers)),
        ("num_heads", i(c.num_heads)),
        ("d_kv", i(c.d_kv)),
        ("vocab_size", i(c.vocab_size)),
        (
            "relative_attention_num_buckets",
            i(c.relative_attention_num_buckets),
        ),
    ]
}

/// A loaded encoder. candle's `forward` takes `&mut self` (the decoder's KV cache lives in the
/// same type), hence the lock; a pipeline runs one prompt at a time anyway.
pub struct T5Text {
    model: Mutex<t5::T5EncoderModel>,
    dtype: DType,
    d_model: usize,
}

impl T5Text {
    /// Loads the encoder from `vb`.
    pub fn load(config: &t5::Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let dtype = vb.dtype();
        Ok(T5Text {
            model: Mutex::new(t5::T5EncoderModel::load(vb, config)?),
            dtype,
            d_model: config.d_model,
        })
    }

    /// Hidden size.
    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// Encodes one sequence of ids: `(1, seq, d_model)` in the weights' dtype.
    pub fn encode(&self, ids: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(ids, device)?.unsqueeze(0)?;
        let mut model = self.model.lock();
        if self.dtype == DType::F16 {
            // T5's activations overflow F16; candle keeps them in F32 when asked.
            model
                .forward_dt(&ids, Some(DType::F32))?
                .to_dtype(DType::F16)
        } else {
            model.forward(&ids)
        }
    }
}
