//! What the user asks for: which models, and how their run profiles differ from the registry
//! defaults (context length, KV dtype, batch, image size, resolution, staging, device).

use model_spec::{DType, Device, RunProfile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How multi-component (diffusion) models hold their components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Staging {
    /// Co-resident when that fits the device alone, else staged components (text encoders
    /// released before denoising, the denoiser before decoding).
    #[default]
    Auto,
    /// All components resident for the whole request.
    CoResident,
    /// Always staged.
    Staged,
}

/// Changes to a model's default run profile. A field applies only to models whose profile
/// uses it (`context_tokens` to generators and LLaVA, `seq_len` to encoders, …), so one
/// request can be given for the whole registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileOverrides {
    /// Generators: tokens the KV cache holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u64>,
    /// Generators: tokens per prefill step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Generators: KV cache element type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_dtype: Option<DType>,
    /// Every model: sequences / images per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
    /// Encoders: tokens per input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<u64>,
    /// Vision and image embedding: square input side in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
    /// Text-to-image: output width and height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// Text-to-image: text tokens fed to the denoiser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_tokens: Option<u64>,
    /// Text-to-image: co-resident or staged components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<Staging>,
    /// Run on this device instead of the profile's (`cpu` to keep a GPU model in RAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
}

impl ProfileOverrides {
    /// `self` with every field set in `more` replaced (per-model settings over global ones).
    pub fn then(&self, more: &ProfileOverrides) -> ProfileOverrides {
        ProfileOverrides {
            context_tokens: more.context_tokens.or(self.context_tokens),
            prompt_tokens: more.prompt_tokens.or(self.prompt_tokens),
            kv_dtype: more.kv_dtype.or(self.kv_dtype),
            batch: more.batch.or(self.batch),
            seq_len: more.seq_len.or(self.seq_len),
            image_size: more.image_size.or(self.image_size),
            width: more.width.or(self.width),
            height: more.height.or(self.height),
            text_tokens: more.text_tokens.or(self.text_tokens),
            staging: more.staging.or(self.staging),
            device: more.device.or(self.device),
        }
    }

    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self == &ProfileOverrides::default()
    }

    /// `profile` with the overrides that apply to it. Staging is decided by the planner.
    pub fn apply(&self, profile: &RunProfile) -> RunProfile {
        let mut p = profile.clone();
        let generator = p.context_tokens.is_some();
        if generator {
            p.context_tokens = self.context_tokens.or(p.context_tokens);
            p.prompt_tokens = self.prompt_tokens.or(p.prompt_tokens);
            p.kv_dtype = self.kv_dtype.or(p.kv_dtype);
        }
        if let Some(b) = self.batch {
            p.batch = b;
        }
        if p.seq_len.is_some() {
            p.seq_len = self.seq_len.or(p.seq_len);
        }
        if p.image_size.is_some() {
            p.image_size = self.image_size.or(p.image_size);
        }
        if p.width.is_some() {
            p.width = self.width.or(p.width);
        }
        if p.height.is_some() {
            p.height = self.height.or(p.height);
        }
        if p.text_tokens.is_some() {
            p.text_tokens = self.text_tokens.or(p.text_tokens);
        }
        if let Some(d) = self.device {
            p.device = d;
        }
        p
    }

    /// Parses `field=value[,field=value…]` (the right-hand side of `--set KEY:…`). Fields:
    /// `context`, `prompt`, `kv`, `batch`, `seq-len`, `image-size`, `resolution` (`WxH`),
    /// `text-tokens`, `staging` (`auto`, `co-resident`, `staged`), `device` (`cpu`, `cuda`,
    /// `metal`).
    pub fn parse_assignments(s: &str) -> Result<ProfileOverrides, String> {
        let mut o = ProfileOverrides::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not `field=value`"))?;
            let (k, v) = (k.trim().to_ascii_lowercase().replace('_', "-"), v.trim());
            match k.as_str() {
                "context" | "context-tokens" | "ctx" => o.context_tokens = Some(parse_tokens(v)?),
                "prompt" | "prompt-tokens" => o.prompt_tokens = Some(parse_tokens(v)?),
                "kv" | "kv-dtype" => o.kv_dtype = Some(parse_kv_dtype(v)?),
                "batch" => o.batch = Some(parse_count(v, "batch")?),
                "seq-len" | "seq" => o.seq_len = Some(parse_tokens(v)?),
                "image-size" | "image" => o.image_size = Some(parse_count(v, "image size")?),
                "resolution" => {
                    let (w, h) = parse_resolution(v)?;
                    o.width = Some(w);
                    o.height = Some(h);
                }
                "text-tokens" => o.text_tokens = Some(parse_tokens(v)?),
                "staging" => o.staging = Some(parse_staging(v)?),
                "device" => o.device = Some(parse_device(v)?),
                _ => {
                    return Err(format!(
                        "unknown field `{k}`; expected context, prompt, kv, batch, seq-len, \
                         image-size, resolution, text-tokens, staging or device"
                    ));
                }
            }
        }
        Ok(o)
    }
}

/// The whole request: models and profile changes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// Registry keys to plan; empty = every registry model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Applied to every model the field applies to.
    #[serde(default, skip_serializing_if = "ProfileOverrides::is_empty")]
    pub overrides: ProfileOverrides,
    /// Per registry key, on top of `overrides`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_model: BTreeMap<String, ProfileOverrides>,
    /// A GPU-profile model that fits no GPU is planned on the CPU against RAM instead of
    /// being reported as never fitting.
    #[serde(default)]
    pub cpu_fallback: bool,
}

/// A token count: `4096`, or `4k` / `16K` meaning × 1024 (the usual way context lengths are
/// written: "4k context" is 4096 tokens).
pub fn parse_tokens(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, scale) = match t.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1024),
        None => (t, 1),
    };
    num.trim()
        .replace('_', "")
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{s}` is not a token count (e.g. `4096` or `16k`)"))
}

fn parse_count(s: &str, what: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{what} `{s}` is not a positive whole number"))
}

/// A KV cache element type: a plain float type (`f32`, `f16`, `bf16`, `f8_e4m3`). Block
/// quantized types are refused: the KV formula counts bytes per element.
pub fn parse_kv_dtype(s: &str) -> Result<DType, String> {
    let d: DType = s.parse()?;
    check_kv_dtype(d)?;
    Ok(d)
}

/// Refuses KV cache types the estimator cannot size per element.
pub fn check_kv_dtype(d: DType) -> Result<(), String> {
    if d.is_float() {
        Ok(())
    } else {
        Err(format!(
            "KV cache type {d} is not supported; use F32, F16, BF16 or F8_E4M3"
        ))
    }
}

/// `1024x768` (or `1024×768`, `1024*768`).
pub fn parse_resolution(s: &str) -> Result<(u64, u64), String> {
    let err = || format!("resolution `{s}` is not `WIDTHxHEIGHT` (e.g. `1024x1024`)");
    let (w, h) = s.trim().split_once(['x', 'X', '×', '*']).ok_or_else(err)?;
    let w = w
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(err)?;
    let h = h
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(err)?;
    Ok((w, h))
}

/// `auto`, `co-resident`, `staged`.
pub fn parse_staging(s: &str) -> Result<Staging, String> {
    match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "auto" => Ok(Staging::Auto),
        "co-resident" | "coresident" => Ok(Staging::CoResident),
        "staged" => Ok(Staging::Staged),
        _ => Err(format!(
            "staging `{s}`: expected `auto`, `co-resident` or `staged`"
        )),
    }
}

/// `cpu`, `cuda`, `metal`.
pub fn parse_device(s: &str) -> Result<Device, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => Ok(Device::Cuda),
        "metal" => Ok(Device::Metal),
        _ => Err(format!("device `{s}`: expected `cpu`, `cuda` or `metal`")),
    }
}

/// Parses one `--set KEY:field=value[,…]` argument.
pub fn parse_model_setting(s: &str) -> Result<(String, ProfileOverrides), String> {
    let (key, rest) = s.split_once(':').ok_or_else(|| {
        format!("`{s}` is not `KEY:field=value` (e.g. `microsoft/phi-4:context=16k,kv=f16`)")
    })?;
    Ok((
        key.trim().to_owned(),
        ProfileOverrides::parse_assignments(rest)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_only_where_they_mean_something() {
        let o = ProfileOverrides {
            context_tokens: Some(16_384),
            kv_dtype: Some(DType::F16),
            seq_len: Some(128),
            ..Default::default()
        };
        let mut llm = RunProfile::cpu();
        llm.context_tokens = Some(4096);
        llm.prompt_tokens = Some(512);
        let p = o.apply(&llm);
        assert_eq!(p.context_tokens, Some(16_384));
        assert_eq!(p.kv_dtype, Some(DType::F16));
        assert_eq!(p.seq_len, None, "an LLM has no encoder sequence length");

        let mut enc = RunProfile::cpu();
        enc.seq_len = Some(512);
        let p = o.apply(&enc);
        assert_eq!(p.seq_len, Some(128));
        assert_eq!(p.context_tokens, None);
        assert_eq!(p.kv_dtype, None);
    }

    #[test]
    fn settings_parse_with_clear_errors() {
        let (k, o) = parse_model_setting("microsoft/phi-4:context=16k,kv=f16,batch=2").unwrap();
        assert_eq!(k, "microsoft/phi-4");
        assert_eq!(o.context_tokens, Some(16_384));
        assert_eq!(o.kv_dtype, Some(DType::F16));
        assert_eq!(o.batch, Some(2));
        let (_, o) = parse_model_setting("x/y:resolution=768x512,staging=staged").unwrap();
        assert_eq!((o.width, o.height), (Some(768), Some(512)));
        assert_eq!(o.staging, Some(Staging::Staged));
        assert!(
            parse_model_setting("phi-4")
                .unwrap_err()
                .contains("KEY:field=value")
        );
        assert!(
            parse_model_setting("x/y:colour=red")
                .unwrap_err()
                .contains("unknown field `colour`")
        );
        assert!(parse_tokens("lots").unwrap_err().contains("16k"));
        assert!(parse_kv_dtype("q8_0").unwrap_err().contains("F16"));
        assert_eq!(parse_kv_dtype("bf16"), Ok(DType::BF16));
        assert!(parse_resolution("1024").is_err());
        let global = ProfileOverrides {
            batch: Some(4),
            context_tokens: Some(8192),
            ..Default::default()
        };
        let merged = global.then(&o);
        assert_eq!(merged.batch, Some(4));
        assert_eq!(merged.width, Some(768));
    }
}
