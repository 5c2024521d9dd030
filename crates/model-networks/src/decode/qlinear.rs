//! The quantized matrices of the GGUF decoders, held once.
//!
//! On the CPU, every matrix whose block type `quant-kernels` covers (Q4_K, Q5_K, Q6_K, Q8_0,
//! rows a multiple of 256) is kept as the file's bytes in a [`QMatrix`] and multiplied by
//! those kernels; candle's CPU path would add a repacked copy beside it on first use. Other
//! types, and every matrix on a GPU, stay candle's `QMatMul`.
//!
//! The token embedding is held the same way and only the looked-up rows are expanded
//! ([`TokenEmbedding`]); a tied output head shares its bytes.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::Embedding;
use quant_kernels::{QMatrix, QuantType};

use model_runtime::{BackendError, GgufFile};

/// The block type of `dtype` if `quant-kernels` multiplies it.
fn kernel_type(dtype: GgmlDType) -> Option<QuantType> {
    match dtype {
        GgmlDType::Q8_0 => Some(QuantType::Q8_0),
        GgmlDType::Q4K => Some(QuantType::Q4K),
        GgmlDType::Q5K => Some(QuantType::Q5K),
        GgmlDType::Q6K => Some(QuantType::Q6K),
        _ => None,
    }
}

/// A weight matrix `[out, in]` applied as `x · Wᵀ`.
#[derive(Debug, Clone)]
pub enum QLinear {
    /// The file's blocks, multiplied by `quant-kernels` (CPU).
    Kernels(Arc<QMatrix>),
    /// candle's quantized (or dense) matmul.
    Candle(QMatMul),
}

impl QLinear {
    /// The matrix of `rows × cols` stored as `bytes` of `dtype`, on `device`.
    pub fn from_bytes(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
        device: &Device,
    ) -> Result<Self> {
        if device.is_cpu()
            && let Some(t) = kernel_type(dtype)
            && cols.is_multiple_of(quant_kernels::blocks::QK_K)
        {
            let m = QMatrix::new(t, rows, cols, bytes).map_err(candle_core::Error::wrap)?;
            return Ok(QLinear::Kernels(Arc::new(m)));
        }
        let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), device, dtype)?;
        Ok(QLinear::Candle(QMatMul::from_qtensor(QTensor::new(
            storage,
            (rows, cols),
        )?)?))
    }

    /// Tensor `name` of `f`.
    pub fn load(
        f: &mut GgufFile,
        name: &str,
        device: &Device,
    ) -> std::result::Result<Self, BackendError> {
        let (dtype, rows, cols, bytes) = f.matrix_bytes(name)?;
        Self::from_bytes(dtype, rows, cols, bytes, device)
            .map_err(|e| BackendError::config(&f.path, format!("tensor `{name}`: {e}")))
    }

    /// Each expert of the stacked tensor `name` of `f`.
    pub fn load_experts(
        f: &mut GgufFile,
        name: &str,
        device: &Device,
    ) -> std::result::Result<Vec<Self>, BackendError> {
        let (dtype, rows, cols) = f.expert_shape(name)?;
        let path = f.path.clone();
        f.split_expert_bytes(name)?
            .into_iter()
            .map(|bytes| {
                Self::from_bytes(dtype, rows, cols, bytes, device)
                    .map_err(|e| BackendError::config(&path, format!("tensor `{name}`: {e}")))
            })
            .collect()
    }

    /// Whether applying the matrix to `rows` rows at once gives each row exactly what it gets
    /// alone: the quantized kernels' row path (below [`quant_kernels::expand::MIN_ROWS`]
    /// rows) dots each row on its own; candle's matmuls may block several rows together.
    pub fn rows_are_independent(&self, rows: usize) -> bool {
        match self {
            QLinear::Kernels(_) => rows < quant_kernels::expand::MIN_ROWS,
            QLinear::Candle(_) => rows <= 1,
        }
    }
}

impl Module for QLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            QLinear::Candle(m) => m.forward(x),
            QLinear::Kernels(m) => {
                let dims = x.dims();
                let k = *dims.last().unwrap_or(&0);
                if k != m.cols() {
                    candle_core::bail!("input width {k} for a matrix of {} columns", m.cols());
                }
                let rows = x.elem_count() / k.max(1);
                let input = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let mut out = vec![0f32; rows * m.rows()];
                m.matmul(&input, rows, &mut out);
                let mut shape = dims.to_vec();
                *shape.last_mut().expect("input has a last dimension") = m.rows();
                Tensor::from_vec(out, shape, x.device())
            }
        }
    }
}

/// The token embedding table: quantized rows expanded when looked up (CPU, covered types), or
/// candle's dense table.
pub enum TokenEmbedding {
    /// The file's blocks.
    Quantized(Arc<QMatrix>),
    /// Dequantized to F32.
    Dense(Embedding),
}

impl TokenEmbedding {
    /// `token_embd.weight` of `f` on `device`, and the same bytes as an output head where the
    /// model ties them.
    pub fn load(
        f: &mut GgufFile,
        device: &Device,
        hidden: usize,
        tied_head: bool,
    ) -> std::result::Result<(Self, Option<QLinear>), BackendError> {
        const NAME: &str = "token_embd.weight";
        let (dtype, rows, cols, bytes) = f.matrix_bytes(NAME)?;
        if cols != hidden {
            return Err(BackendError::config(
                &f.path,
                format!("{NAME} has rows of {cols}, the hidden size is {hidden}"),
            ));
        }
        let bad =
            |e: candle_core::Error| BackendError::config(&f.path, format!("tensor `{NAME}`: {e}"));
        if device.is_cpu() && kernel_type(dtype).is_some() {
            let QLinear::Kernels(m) =
                QLinear::from_bytes(dtype, rows, cols, bytes, device).map_err(bad)?
            else {
                unreachable!("covered types on the CPU go to the kernels")
            };
            let head = tied_head.then(|| QLinear::Kernels(m.clone()));
            return Ok((TokenEmbedding::Quantized(m), head));
        }
        let storage =
            QStorage::from_data(std::borrow::Cow::Owned(bytes), device, dtype).map_err(bad)?;
        let q = QTensor::new(storage, (rows, cols)).map_err(bad)?;
        // Dequantized to F32, as candle's GGUF models do (the estimator counts it so).
        let table = q.dequantize(device).map_err(bad)?;
        let head = if tied_head {
            Some(QLinear::Candle(QMatMul::from_qtensor(q).map_err(bad)?))
        } else {
            None
        };
        Ok((TokenEmbedding::Dense(Embedding::new(table, hidden)), head))
    }

    /// The rows of `ids` (`[1, len]`) as `[1, len, hidden]` F32.
    pub fn forward(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            TokenEmbedding::Dense(e) => e.forward(&Tensor::new(ids, device)?.unsqueeze(0)?),
            TokenEmbedding::Quantized(m) => {
                let hidden = m.cols();
                let mut out = vec![0f32; ids.len() * hidden];
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(hidden)) {
                    let id = id as usize;
                    if id >= m.rows() {
                        candle_core::bail!(
                            "token id {id} is outside the vocabulary of {}",
                            m.rows()
                        );
                    }
                    m.dequantize_row(id, row);
                }
                Tensor::from_vec(out, (1, ids.len(), hidden), device)
            }
        }
    }
}
