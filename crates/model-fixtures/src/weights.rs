//! Random tensors written with candle's safetensors writer: one file, or shards with the
//! `model.safetensors.index.json` that sharded Hub checkpoints carry. Values come from the
//! crate's deterministic [`Rng`](crate::Rng) in the order the tensors are put, so a seed
//! always gives the same checkpoint.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::Rng;

/// Tensors of a checkpoint being written, by name.
pub(crate) struct Weights {
    pub map: HashMap<String, Tensor>,
    rng: Rng,
    dtype: DType,
    spread: f32,
}

impl Weights {
    /// Tensors stored as `dtype`, drawn from `seed`.
    pub fn new(dtype: DType, seed: u64) -> Self {
        Weights {
            map: HashMap::new(),
            rng: Rng::new(seed),
            dtype,
            spread: 0.2,
        }
    }

    /// Weights ([`rand`](Self::rand), [`linear`](Self::linear)) uniform in `±spread` instead of
    /// ±0.2: full-size layers need smaller ones for their attention to stay as soft as a
    /// trained model's rather than pick one token on rounding.
    pub fn with_spread(mut self, spread: f32) -> Self {
        self.spread = spread;
        self
    }

    /// A tensor of `shape`, uniform in `center ± spread`.
    pub fn put(&mut self, name: impl Into<String>, shape: &[usize], center: f32, spread: f32) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = self.rng.vec(n, center, spread);
        let t = Tensor::from_vec(data, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(self.dtype)
            .unwrap();
        self.map.insert(name.into(), t);
    }

    /// A weight around 0.
    pub fn rand(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.put(name, shape, 0.0, self.spread);
    }

    /// `{p}.weight` `[o, i]` and, with `bias`, `{p}.bias`.
    pub fn linear(&mut self, p: &str, i: usize, o: usize, bias: bool) {
        self.rand(format!("{p}.weight"), &[o, i]);
        if bias {
            self.put(format!("{p}.bias"), &[o], 0.0, 0.05);
        }
    }

    /// A layer norm's scale (around 1) and bias.
    pub fn layer_norm(&mut self, p: &str, n: usize) {
        self.put(format!("{p}.weight"), &[n], 1.0, 0.1);
        self.put(format!("{p}.bias"), &[n], 0.0, 0.05);
    }

    /// An RMS norm's scale (around 1).
    pub fn rms(&mut self, p: &str, n: usize) {
        self.put(format!("{p}.weight"), &[n], 1.0, 0.1);
    }

    /// Saves every tensor into the file `path`.
    pub fn save(self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        candle_core::safetensors::save(&self.map, path).unwrap();
    }

    /// Saves into `n` shards plus `model.safetensors.index.json`, like sharded Hub checkpoints
    /// (consecutive runs of the sorted names per shard).
    pub fn save_sharded(self, dir: &Path, n: usize) {
        let mut names: Vec<String> = self.map.keys().cloned().collect();
        names.sort();
        let mut weight_map = serde_json::Map::new();
        let chunk = names.len().div_ceil(n);
        for (s, group) in names.chunks(chunk).enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, n);
            let part: HashMap<String, Tensor> = group
                .iter()
                .map(|k| (k.clone(), self.map[k].clone()))
                .collect();
            candle_core::safetensors::save(&part, dir.join(&file)).unwrap();
            for k in group {
                weight_map.insert(k.clone(), json!(file));
            }
        }
        crate::write_json(
            &dir.join("model.safetensors.index.json"),
            &json!({ "metadata": {}, "weight_map": weight_map }),
        )
        .unwrap();
    }
}
