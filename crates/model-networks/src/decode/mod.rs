//! Text generators: [`phi3`] (GGUF, RoPE base from the file), [`qwen3_moe`] (GGUF, experts on
//! any device) and [`llava`] (1.5, the config built explicitly), each loading through the same
//! code for tiny test checkpoints and real ones. [`GenerativeModel`] ties a network to its
//! tokenizer, end tokens and limits; a [`Session`] is one request's KV cache on it. The two
//! GGUF families share one skeleton (embedding, layer stack, output head, RoPE tables) and
//! differ only in their hyper-parameters and layers.

pub mod attention;
pub mod batch;
pub mod llava;
pub mod model;
pub mod phi3;
pub mod qlinear;
pub mod qwen3_moe;
mod trunk;

pub use batch::BatchStats;
pub use model::{DecoderParams, GenerativeModel, Session};

/// The code a generator runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decoder {
    /// [`phi3`] from GGUF (Phi-4).
    Phi3Gguf,
    /// [`qwen3_moe`] from GGUF (Qwen3-Coder-30B-A3B).
    Qwen3MoeGguf,
    /// [`llava`] 1.5 from safetensors (llava-hf layout).
    Llava15,
}

impl Decoder {
    /// Every decoder.
    pub const ALL: [Decoder; 3] = [Decoder::Phi3Gguf, Decoder::Qwen3MoeGguf, Decoder::Llava15];

    /// The decoder of an architecture name (GGUF `general.architecture`, or the spec family).
    pub fn for_architecture(architecture: &str) -> Option<Decoder> {
        match architecture {
            phi3::ARCHITECTURE => Some(Decoder::Phi3Gguf),
            qwen3_moe::ARCHITECTURE | "qwen3_moe" => Some(Decoder::Qwen3MoeGguf),
            "llava" => Some(Decoder::Llava15),
            _ => None,
        }
    }

    /// The architecture name.
    pub fn architecture(self) -> &'static str {
        match self {
            Decoder::Phi3Gguf => phi3::ARCHITECTURE,
            Decoder::Qwen3MoeGguf => qwen3_moe::ARCHITECTURE,
            Decoder::Llava15 => "llava",
        }
    }

    /// Whether requests may carry an image.
    pub fn takes_images(self) -> bool {
        self == Decoder::Llava15
    }

    /// Whether the weights are one GGUF file (else a checkpoint directory).
    pub fn is_gguf(self) -> bool {
        self != Decoder::Llava15
    }
}

impl std::fmt::Display for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.architecture())
    }
}
