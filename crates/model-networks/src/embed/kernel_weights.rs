//! Reading a checkpoint's tensors into the f32 layouts of [`encoder_kernels`], for the families
//! that run on those kernels on the CPU (BERT, JinaBERT, CLIP, the Qwen2 and Mistral bodies). Each tensor is read, laid out
//! and dropped in turn, so a load holds the weights once plus one tensor.

use candle_core::DType;
use candle_nn::VarBuilder;
use encoder_kernels::Linear;
use encoder_kernels::bert::LayerNorm;
use model_runtime::{BackendError, ModelDir};

/// The tensor `name` of `shape`, as f32 values.
pub(crate) fn read(
    vb: &VarBuilder<'static>,
    shape: &[usize],
    name: &str,
) -> candle_core::Result<Vec<f32>> {
    vb.get(shape, name)?.flatten_all()?.to_vec1::<f32>()
}

/// The linear layer `vb` (`weight` `[outputs, inputs]`, and `bias` when `bias`).
pub(crate) fn linear(
    vb: &VarBuilder<'static>,
    outputs: usize,
    inputs: usize,
    bias: bool,
) -> candle_core::Result<Linear> {
    let w = read(vb, &[outputs, inputs], "weight")?;
    let b = bias.then(|| read(vb, &[outputs], "bias")).transpose()?;
    Ok(Linear::new(&w, b.as_deref(), outputs, inputs))
}

/// Several linear layers reading the same `inputs` as one, their outputs side by side in the
/// order given (query, key, value; gate, up): each part is `(vb, outputs)`, with its `bias`
/// when `bias`. The weights are stacked as read and packed once.
pub(crate) fn stacked(
    parts: &[(&VarBuilder<'static>, usize)],
    inputs: usize,
    bias: bool,
) -> candle_core::Result<Linear> {
    let (mut weight, mut biases) = (Vec::new(), Vec::new());
    for &(vb, outputs) in parts {
        weight.extend(read(vb, &[outputs, inputs], "weight")?);
        if bias {
            biases.extend(read(vb, &[outputs], "bias")?);
        }
    }
    let outputs = parts.iter().map(|p| p.1).sum();
    Ok(Linear::new(
        &weight,
        bias.then_some(&biases[..]),
        outputs,
        inputs,
    ))
}

/// Query, key and value (`[width, width]` each, with biases) as one layer.
pub(crate) fn qkv(
    q: &VarBuilder<'static>,
    k: &VarBuilder<'static>,
    v: &VarBuilder<'static>,
    width: usize,
) -> candle_core::Result<Linear> {
    stacked(&[(q, width), (k, width), (v, width)], width, true)
}

/// The layer norm `vb` over `width` values.
pub(crate) fn layer_norm(
    vb: &VarBuilder<'static>,
    width: usize,
    eps: f64,
) -> candle_core::Result<LayerNorm> {
    Ok(LayerNorm {
        gamma: read(vb, &[width], "weight")?,
        beta: read(vb, &[width], "bias")?,
        eps: eps as f32,
    })
}

/// Refuses a checkpoint loaded as anything but f32 on the CPU, the only thing the kernels run.
pub(crate) fn check_f32_cpu(dir: &ModelDir, vb: &VarBuilder<'static>) -> Result<(), BackendError> {
    if vb.device().is_cpu() && vb.dtype() == DType::F32 {
        return Ok(());
    }
    Err(BackendError::config(
        dir.root().join("config.json"),
        format!(
            "the encoder CPU kernels run f32 on the CPU, not {:?} on {:?}; load with the candle backend",
            vb.dtype(),
            vb.device()
        ),
    ))
}

/// A loading error of the kernels' layout, attributed to the weights file.
pub(crate) fn weights_error(dir: &ModelDir, e: candle_core::Error) -> BackendError {
    BackendError::config(dir.root().join("model.safetensors"), e.to_string())
}
