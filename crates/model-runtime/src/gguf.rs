//! Reading GGUF files: the header (metadata and tensor table, without the weights), typed
//! metadata lookups under the file's architecture prefix, the tensor inventory in the
//! estimator's terms, and the tokenizer (`tokenizer.json` beside the file when there is one,
//! else rebuilt from the `tokenizer.ggml.*` metadata by candle's `TokenizerFromGguf`).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use model_spec::shapes::TensorDesc;
use tokenizers::Tokenizer;

use crate::error::{BackendError, without_backtrace, without_panics};

/// A GGUF file with its header read.
pub struct GgufFile {
    /// Where it is.
    pub path: PathBuf,
    /// Metadata and tensor table.
    pub content: Content,
    /// The open file, for reading tensors.
    pub reader: BufReader<File>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens `path` and reads its header (not its tensors).
    pub fn open(path: &Path) -> Result<Self, BackendError> {
        let file = File::open(path).map_err(|e| BackendError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| {
            BackendError::config(
                path,
                format!("not a readable GGUF file: {}", without_backtrace(e)),
            )
        })?;
        let file_len = reader
            .get_ref()
            .metadata()
            .map_err(|e| BackendError::io(path, e))?
            .len();
        check_tensor_table(&content, file_len).map_err(|m| BackendError::config(path, m))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    /// `general.architecture` (`phi3`, `qwen3moe`, `deepseek2` …).
    pub fn architecture(&self) -> Result<String, BackendError> {
        self.string("general.architecture")
    }

    /// A metadata string.
    pub fn string(&self, key: &str) -> Result<String, BackendError> {
        self.value(key)?
            .to_string()
            .cloned()
            .map_err(|e| self.bad(key, without_backtrace(e)))
    }

    /// A metadata value.
    pub fn value(&self, key: &str) -> Result<&Value, BackendError> {
        self.content.metadata.get(key).ok_or_else(|| {
            BackendError::config(&self.path, format!("GGUF metadata `{key}` is missing"))
        })
    }

    /// An unsigned metadata number (any integer width).
    pub fn usize(&self, key: &str) -> Result<usize, BackendError> {
        let v = self.value(key)?;
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I8(x) if *x >= 0 => *x as u64,
            Value::I16(x) if *x >= 0 => *x as u64,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            other => return Err(self.bad(key, format!("{other:?} is not a count"))),
        };
        Ok(n as usize)
    }

    /// A float metadata value (any float width).
    pub fn f64(&self, key: &str) -> Result<f64, BackendError> {
        match self.value(key)? {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            other => Err(self.bad(key, format!("{other:?} is not a number"))),
        }
    }

    /// An optional value: `None` when absent, an error when present but malformed.
    pub fn optional<T>(
        &self,
        key: &str,
        get: impl Fn(&Self, &str) -> Result<T, BackendError>,
    ) -> Result<Option<T>, BackendError> {
        if self.content.metadata.contains_key(key) {
            get(self, key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads tensor `name` onto `device`.
    pub fn tensor(
        &mut self,
        name: &str,
        device: &candle_core::Device,
    ) -> Result<QTensor, BackendError> {
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| {
                BackendError::config(
                    &self.path,
                    format!("tensor `{name}`: {}", without_backtrace(e)),
                )
            })
    }

    /// The blocks of each expert of a stacked `[n_experts, rows, cols]` tensor, as stored,
    /// read straight from the file (each expert's slice is contiguous in ggml's layout), so the
    /// stacked tensor is never held in memory next to its parts.
    pub fn split_expert_bytes(&mut self, name: &str) -> Result<Vec<Vec<u8>>, BackendError> {
        self.expert_parts(name, |bytes| Ok(bytes.to_vec()))
    }

    /// The block type and per-expert `(rows, cols)` of a stacked expert tensor.
    pub fn expert_shape(&self, name: &str) -> Result<(GgmlDType, usize, usize), BackendError> {
        let bad = |m: String| BackendError::config(&self.path, format!("tensor `{name}`: {m}"));
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| bad("missing".into()))?;
        let (_, rows, cols) = info
            .shape
            .dims3()
            .map_err(|e| bad(format!("not a stack of expert matrices: {e}")))?;
        let dtype = info.ggml_dtype;
        if !(rows * cols).is_multiple_of(dtype.block_size()) {
            return Err(bad(format!(
                "{rows}×{cols} is not a whole number of {dtype:?} blocks"
            )));
        }
        Ok((dtype, rows, cols))
    }

    /// Calls `each` on the bytes of every expert of `name` in turn (one buffer reused).
    fn expert_parts<T>(
        &mut self,
        name: &str,
        mut each: impl FnMut(&[u8]) -> Result<T, BackendError>,
    ) -> Result<Vec<T>, BackendError> {
        use std::io::{Read, Seek, SeekFrom};
        let (dtype, rows, cols) = self.expert_shape(name)?;
        let info = &self.content.tensor_infos[name];
        let experts = info.shape.dims()[0];
        let bytes = rows * cols / dtype.block_size() * dtype.type_size();
        let start = self.content.tensor_data_offset + info.offset;
        let path = self.path.clone();
        self.reader
            .seek(SeekFrom::Start(start))
            .map_err(|e| BackendError::io(&path, e))?;
        let mut buf = vec![0u8; bytes];
        let mut out = Vec::with_capacity(experts);
        for _ in 0..experts {
            self.reader
                .read_exact(&mut buf)
                .map_err(|e| BackendError::io(&path, e))?;
            out.push(each(&buf)?);
        }
        Ok(out)
    }

    /// The block type, `(rows, cols)` and stored bytes of the 2-D tensor `name`, read straight
    /// from the file into the one buffer the caller keeps.
    pub fn matrix_bytes(
        &mut self,
        name: &str,
    ) -> Result<(GgmlDType, usize, usize, Vec<u8>), BackendError> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.path.clone();
        let bad = |m: String| BackendError::config(&path, format!("tensor `{name}`: {m}"));
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| bad("missing".into()))?;
        let (rows, cols) = info
            .shape
            .dims2()
            .map_err(|e| bad(format!("not a matrix: {e}")))?;
        let dtype = info.ggml_dtype;
        if !cols.is_multiple_of(dtype.block_size()) {
            return Err(bad(format!(
                "rows of {cols} are not a whole number of {dtype:?} blocks"
            )));
        }
        let mut buf = vec![0u8; rows * cols / dtype.block_size() * dtype.type_size()];
        let start = self.content.tensor_data_offset + info.offset;
        self.reader
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.reader.read_exact(&mut buf))
            .map_err(|e| BackendError::io(&path, e))?;
        Ok((dtype, rows, cols, buf))
    }

    /// Whether the file has tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Every tensor in the estimator's terms (ggml `ne` order, spec dtype names).
    pub fn tensor_descs(&self) -> Result<Vec<TensorDesc>, BackendError> {
        let mut out = Vec::with_capacity(self.content.tensor_infos.len());
        for (name, info) in &self.content.tensor_infos {
            let dtype = spec_dtype(info.ggml_dtype).ok_or_else(|| {
                BackendError::config(
                    &self.path,
                    format!(
                        "tensor `{name}`: ggml type {:?} unknown to the estimator",
                        info.ggml_dtype
                    ),
                )
            })?;
            out.push(TensorDesc {
                name: name.clone(),
                shape: info.shape.dims().iter().rev().map(|&d| d as u64).collect(),
                dtype,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The tokenizer: `tokenizer` if given, else `tokenizer.json` in the file's directory,
    /// else rebuilt from the GGUF's own vocabulary.
    pub fn tokenizer(&self, tokenizer: Option<&Path>) -> Result<Tokenizer, BackendError> {
        let path = tokenizer.unwrap_or(&self.path);
        without_panics(path, || self.read_tokenizer(tokenizer))
    }

    fn read_tokenizer(&self, tokenizer: Option<&Path>) -> Result<Tokenizer, BackendError> {
        let beside = self.path.parent().map(|d| d.join("tokenizer.json"));
        let json = tokenizer
            .map(Path::to_path_buf)
            .or_else(|| beside.filter(|p| p.is_file()));
        if let Some(path) = json {
            return crate::tokenizer::read(&path);
        }
        use candle_core::quantized::tokenizer::TokenizerFromGguf;
        let mut tokenizer = Tokenizer::from_gguf(&self.content).map_err(|e| {
            BackendError::Tokenizer(format!(
                "{}: no tokenizer.json beside the file and the GGUF vocabulary could not be rebuilt: {}",
                self.path.display(),
                without_backtrace(e)
            ))
        })?;
        let pre = self.string("tokenizer.ggml.pre").unwrap_or_default();
        if !CANDLE_PRE_TOKENIZERS.contains(&pre.as_str()) {
            // candle falls back to GPT-2's byte-level pre-tokenizer, which puts a space in
            // front of the text after every special token ("<|im_start|> user"). The other
            // byte-level BPE vocabularies llama.cpp names (`dbrx` is Phi-4's cl100k split)
            // use the cl100k pattern without a prefix space, as their tokenizer.json does.
            use tokenizers::pre_tokenizers::byte_level::ByteLevel;
            use tokenizers::pre_tokenizers::sequence::Sequence;
            use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
            let split = Split::new(
                SplitPattern::Regex(CL100K_PATTERN.to_owned()),
                tokenizers::SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| BackendError::Tokenizer(e.to_string()))?;
            tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])));
            tokenizer.with_decoder(Some(ByteLevel::new(false, true, false)));
        }
        Ok(tokenizer)
    }

    fn bad(&self, key: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::config(&self.path, format!("GGUF metadata `{key}`: {e}"))
    }
}

/// Checks every entry of the tensor table against the file before anything is read: candle
/// computes element counts without overflow checks and views a zero-length read as a slice of
/// blocks from a dangling pointer, so a corrupt shape must be refused here.
fn check_tensor_table(content: &Content, file_len: u64) -> Result<(), String> {
    for (name, info) in &content.tensor_infos {
        let dims = info.shape.dims();
        let elems = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                format!("tensor `{name}`: shape {dims:?} holds no elements or overflows")
            })?;
        let block = info.ggml_dtype.block_size();
        if !elems.is_multiple_of(block) {
            return Err(format!(
                "tensor `{name}`: {elems} elements are not a whole number of {:?} blocks of {block}",
                info.ggml_dtype
            ));
        }
        let bytes = ((elems / block) as u64).checked_mul(info.ggml_dtype.type_size() as u64);
        let end = content
            .tensor_data_offset
            .checked_add(info.offset)
            .zip(bytes)
            .and_then(|(start, bytes)| start.checked_add(bytes));
        if end.is_none_or(|end| end > file_len) {
            let bytes = bytes.map_or_else(|| "more than 2^64".to_owned(), |b| b.to_string());
            return Err(format!(
                "tensor `{name}` ({bytes} bytes at offset {}) runs past the end of the {file_len}-byte file: \
                 the file is truncated; download it again",
                info.offset
            ));
        }
    }
    Ok(())
}

/// `tokenizer.ggml.pre` values candle's `TokenizerFromGguf` configures itself.
const CANDLE_PRE_TOKENIZERS: [&str; 4] = ["qwen2", "smaug-bpe", "lfm2", "llama3"];

/// The cl100k split (llama.cpp's `dbrx`/`llama3` pre-tokenizer).
const CL100K_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The spec dtype of a ggml type.
pub fn spec_dtype(t: GgmlDType) -> Option<model_spec::DType> {
    use model_spec::DType as D;
    Some(match t {
        GgmlDType::F32 => D::F32,
        GgmlDType::F16 => D::F16,
        GgmlDType::BF16 => D::BF16,
        GgmlDType::Q4_0 => D::Q4_0,
        GgmlDType::Q4_1 => D::Q4_1,
        GgmlDType::Q5_0 => D::Q5_0,
        GgmlDType::Q5_1 => D::Q5_1,
        GgmlDType::Q8_0 => D::Q8_0,
        GgmlDType::Q2K => D::Q2K,
        GgmlDType::Q3K => D::Q3K,
        GgmlDType::Q4K => D::Q4K,
        GgmlDType::Q5K => D::Q5K,
        GgmlDType::Q6K => D::Q6K,
        GgmlDType::Q8K => D::Q8K,
        _ => return None,
    })
}

/// The ggml type of a spec dtype (for writing checkpoints of a spec's geometry).
pub fn ggml_dtype(t: model_spec::DType) -> Option<GgmlDType> {
    use model_spec::DType as D;
    Some(match t {
        D::F32 => GgmlDType::F32,
        D::F16 => GgmlDType::F16,
        D::BF16 => GgmlDType::BF16,
        D::Q4_0 => GgmlDType::Q4_0,
        D::Q4_1 => GgmlDType::Q4_1,
        D::Q5_0 => GgmlDType::Q5_0,
        D::Q5_1 => GgmlDType::Q5_1,
        D::Q8_0 => GgmlDType::Q8_0,
        D::Q2K => GgmlDType::Q2K,
        D::Q3K => GgmlDType::Q3K,
        D::Q4K => GgmlDType::Q4K,
        D::Q5K => GgmlDType::Q5K,
        D::Q6K => GgmlDType::Q6K,
        D::Q8K => GgmlDType::Q8K,
        _ => return None,
    })
}
