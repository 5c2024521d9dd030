//! Spec → tokens: one `CandleModelInfo` value per checked spec.

use model_spec::{Capability, Device, Format, MemorySection, ModelSpec, RunProfile};
use proc_macro2::{Literal, TokenStream};
use quote::quote;

/// Where `CandleModelInfo` and its parts live, as seen from the generated code.
#[derive(Debug, Clone)]
pub struct Target {
    krate: TokenStream,
}

impl Target {
    /// Code included into `model-registry` itself (its build script's output).
    pub fn in_registry() -> Self {
        Target {
            krate: quote!(crate),
        }
    }

    /// Code expanded in a crate that depends on `model-registry` (the proc-macro).
    pub fn external() -> Self {
        Target {
            krate: quote!(::model_registry),
        }
    }

    /// Path of the registry crate.
    pub fn krate(&self) -> &TokenStream {
        &self.krate
    }
}

/// What goes into one `CandleModelInfo` besides the spec itself.
#[derive(Debug, Clone)]
pub struct InfoSource<'a> {
    pub spec: &'a ModelSpec,
    /// The checked `[memory]` table.
    pub memory: &'a MemorySection,
    /// `models.toml`'s quantization, or [`derived_quantization`] for a spec on its own.
    pub quantization: String,
    /// How the spec file is named in `spec_path`.
    pub spec_path: String,
    /// An expression for the spec's text (`include_str!(…)` of the file, or the literal).
    pub spec_text: TokenStream,
}

/// An integer literal, digits grouped by three (`90_856_960`) so the generated code reads well
/// and passes `clippy::unreadable_literal`.
fn lit_u64(v: u64) -> Literal {
    let digits = v.to_string();
    if digits.len() <= 4 {
        return Literal::u64_unsuffixed(v);
    }
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push('_');
        }
        grouped.push(c);
    }
    grouped.parse().expect("a grouped integer is a literal")
}

fn opt_u64(v: Option<u64>) -> TokenStream {
    match v {
        Some(v) => {
            let v = lit_u64(v);
            quote!(Some(#v))
        }
        None => quote!(None),
    }
}

fn opt_str(v: Option<&str>) -> TokenStream {
    match v {
        Some(v) => quote!(Some(#v)),
        None => quote!(None),
    }
}

fn capability(c: Capability, k: &TokenStream) -> TokenStream {
    match c {
        Capability::TextEmbedding => quote!(#k::Capability::TextEmbedding),
        Capability::ImageEmbedding => quote!(#k::Capability::ImageEmbedding),
        Capability::TextToText => quote!(#k::Capability::TextToText),
        Capability::Vision => quote!(#k::Capability::Vision),
        Capability::TextToImage => quote!(#k::Capability::TextToImage),
    }
}

fn format(f: Format, k: &TokenStream) -> TokenStream {
    match f {
        Format::Safetensors => quote!(#k::WeightFormat::Safetensors),
        Format::Gguf => quote!(#k::WeightFormat::Gguf),
    }
}

/// `RunProfile { … }` for the generated code.
pub fn profile_expr(p: &RunProfile, k: &TokenStream) -> TokenStream {
    let device = match p.device {
        Device::Cpu => quote!(#k::Device::Cpu),
        Device::Cuda => quote!(#k::Device::Cuda),
        Device::Metal => quote!(#k::Device::Metal),
    };
    let load_dtype = opt_str(p.load_dtype.map(|d| d.as_str()));
    let activation_dtype = opt_str(p.activation_dtype.map(|d| d.as_str()));
    let kv_dtype = opt_str(p.kv_dtype.map(|d| d.as_str()));
    let batch = lit_u64(p.batch);
    let seq_len = opt_u64(p.seq_len);
    let context_tokens = opt_u64(p.context_tokens);
    let prompt_tokens = opt_u64(p.prompt_tokens);
    let image_size = opt_u64(p.image_size);
    let width = opt_u64(p.width);
    let height = opt_u64(p.height);
    let text_tokens = opt_u64(p.text_tokens);
    let co_resident = p.co_resident;
    let dequantize = &p.dequantize_on_load;
    let skip = &p.skip_on_load;
    let overhead_mb = opt_u64(p.overhead_mb);
    let margin = lit_u64(p.margin_percent);
    quote! {
        #k::RunProfile {
            device: #device,
            load_dtype: #load_dtype,
            activation_dtype: #activation_dtype,
            batch: #batch,
            seq_len: #seq_len,
            context_tokens: #context_tokens,
            prompt_tokens: #prompt_tokens,
            kv_dtype: #kv_dtype,
            image_size: #image_size,
            width: #width,
            height: #height,
            text_tokens: #text_tokens,
            co_resident: #co_resident,
            dequantize_on_load: &[#(#dequantize),*],
            skip_on_load: &[#(#skip),*],
            overhead_mb: #overhead_mb,
            margin_percent: #margin,
        }
    }
}

/// The backend that serves a spec, from its capability, its main component's family and,
/// for the two Qwen2 embedders, whether it has a Sentence-Transformers Dense head; `None`
/// when no Candle backend runs the architecture. This is the one place that maps spec facts
/// onto backends: the runtime reads the result from the registry.
pub fn backend_of(spec: &ModelSpec) -> Option<&'static str> {
    use model_spec::Family as F;
    let main = spec
        .components
        .iter()
        .find(|c| matches!(c.name.as_str(), "model" | "transformer"))
        .or(spec.components.first())?;
    let has = |f: F| spec.components.iter().any(|c| c.family == f);
    Some(match (spec.capability, main.family) {
        (Capability::TextEmbedding | Capability::ImageEmbedding, f) => match f {
            F::Bert => "Bert",
            F::JinaBert => "JinaBert",
            F::Qwen2 if has(F::Dense) => "Stella",
            F::Qwen2 => "GteQwen2",
            F::NvEmbed => "NvEmbed",
            F::Clip => "Clip",
            _ => return None,
        },
        (Capability::TextToText | Capability::Vision, f) => match architecture(spec).as_str() {
            "phi3" => "Phi3Gguf",
            "qwen3moe" => "Qwen3MoeGguf",
            _ if f == F::Llava => "Llava15",
            _ => return None,
        },
        (Capability::TextToImage, F::Flux) => "Flux",
        (Capability::TextToImage, F::Mmdit) => "Sd3",
        (Capability::TextToImage, _) => return None,
    })
}

/// The architecture as the weights name it: the recorded `gguf_architecture`, else the
/// family of the main component.
pub fn architecture(spec: &ModelSpec) -> String {
    let Some(c) = spec.components.first() else {
        return String::new();
    };
    c.architecture
        .get("gguf_architecture")
        .and_then(|f| f.get_ref().value.as_str().map(str::to_owned))
        .unwrap_or_else(|| c.family.as_str().to_owned())
}

fn serving_str(spec: &ModelSpec, key: &str) -> Option<String> {
    spec.serving
        .get(key)
        .and_then(|f| f.get_ref().value.as_str().map(str::to_owned))
}

fn serving_f64(spec: &ModelSpec, key: &str) -> Option<f64> {
    spec.serving
        .get(key)
        .and_then(|f| match &f.get_ref().value {
            toml::Value::Float(x) => Some(*x),
            toml::Value::Integer(i) => Some(*i as f64),
            _ => None,
        })
}

/// `ServingFacts { … }` for the generated code.
pub fn serving_expr(spec: &ModelSpec, k: &TokenStream) -> TokenStream {
    let architecture = architecture(spec);
    let s = |key: &str| opt_str(serving_str(spec, key).as_deref());
    let u = |key: &str| opt_u64(spec.serving_u64(key));
    let pooling = s("pooling");
    let query_instruction = s("query_instruction");
    let chat_template = s("chat_template");
    let normalize = match spec
        .serving
        .get("normalize")
        .and_then(|f| f.get_ref().value.as_bool())
    {
        Some(b) => quote!(Some(#b)),
        None => quote!(None),
    };
    let generator = matches!(spec.capability, Capability::TextToText | Capability::Vision);
    let sampling = if generator {
        let f = |key: &str, default: f64| {
            Literal::f64_unsuffixed(serving_f64(spec, key).unwrap_or(default))
        };
        let temperature = f("temperature", 0.0);
        let top_p = f("top_p", 1.0);
        let top_k = lit_u64(spec.serving_u64("top_k").unwrap_or(0));
        let repetition_penalty = f("repetition_penalty", 1.0);
        quote!(Some(#k::SamplingDefaults {
            temperature: #temperature,
            top_p: #top_p,
            top_k: #top_k,
            repetition_penalty: #repetition_penalty,
        }))
    } else {
        quote!(None)
    };
    let image_size = u("image_size");
    let default_steps = u("default_steps");
    let max_width = u("max_width");
    let max_height = u("max_height");
    quote! {
        #k::ServingFacts {
            architecture: #architecture,
            pooling: #pooling,
            normalize: #normalize,
            query_instruction: #query_instruction,
            chat_template: #chat_template,
            sampling: #sampling,
            image_size: #image_size,
            default_steps: #default_steps,
            max_width: #max_width,
            max_height: #max_height,
        }
    }
}

fn components_expr(spec: &ModelSpec, k: &TokenStream) -> TokenStream {
    let items = spec.components.iter().map(|c| {
        let name = &c.name;
        let family = c.family.as_str();
        let stage = match c.stage {
            model_spec::spec::Stage::Main => "main",
            model_spec::spec::Stage::TextEncoder => "text_encoder",
            model_spec::spec::Stage::Denoiser => "denoiser",
            model_spec::spec::Stage::Decoder => "decoder",
        };
        let files = &c.files;
        quote!(#k::ComponentInfo {
            name: #name,
            family: #family,
            stage: #stage,
            files: &[#(#files),*],
        })
    });
    quote!(&[#(#items),*])
}

/// The text of a fact's value (`"unpinned"` for `revision = { value = "unpinned", … }`).
pub fn fact_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `CandleModelInfo { … }` for one checked spec.
pub fn info_expr(src: &InfoSource<'_>, target: &Target) -> TokenStream {
    let k = target.krate();
    let spec = src.spec;
    let m = src.memory;
    let key = spec.registry_key.get_ref();
    let name = &spec.name;
    let provider = &spec.provider;
    let capability = capability(spec.capability, k);
    let license = opt_str(spec.license.as_deref());
    let revision = fact_text(&spec.revision.value);
    let format = format(
        spec.components
            .first()
            .map_or(Format::Safetensors, |c| c.format),
        k,
    );
    let quantization = &src.quantization;
    let max_input = opt_u64(spec.serving_u64("max_input_tokens"));
    let max_output = opt_u64(spec.serving_u64("max_output_tokens"));
    let embedding_dim = opt_u64(spec.serving_u64("embedding_dim"));
    let profile = profile_expr(&m.profile, k);
    let est = lit_u64(m.est_memory_allocation_mb);
    let [weights, kv, act, overhead, margin, total] = [
        m.weights_bytes,
        m.kv_cache_bytes,
        m.activations_bytes,
        m.overhead_bytes,
        m.margin_bytes,
        m.total_bytes,
    ]
    .map(lit_u64);
    let fingerprint = &m.fingerprint;
    let spec_path = &src.spec_path;
    let spec_text = &src.spec_text;
    let backend = match backend_of(spec) {
        Some(b) => {
            let b = proc_macro2::Ident::new(b, proc_macro2::Span::call_site());
            quote!(Some(#k::Backend::#b))
        }
        None => quote!(None),
    };
    let serving = serving_expr(spec, k);
    let components = components_expr(spec, k);
    quote! {
        #k::CandleModelInfo {
            registry_key: #key,
            name: #name,
            provider: #provider,
            capability: #capability,
            license: #license,
            revision: #revision,
            format: #format,
            quantization: #quantization,
            max_input_tokens: #max_input,
            max_output_tokens: #max_output,
            embedding_dim: #embedding_dim,
            default_profile: #profile,
            est_memory_allocation_mb: #est,
            memory: #k::MemoryBreakdown {
                weights_bytes: #weights,
                kv_cache_bytes: #kv,
                activations_bytes: #act,
                overhead_bytes: #overhead,
                margin_bytes: #margin,
                total_bytes: #total,
            },
            fingerprint: #fingerprint,
            backend: #backend,
            serving: #serving,
            components: #components,
            spec_path: #spec_path,
            spec_toml: #spec_text,
        }
    }
}

/// Quantization label for a spec without a `models.toml` entry: the storage type holding the
/// most bytes, and the type it is converted to on load when that differs (`F16 (loaded as
/// F32)`).
pub fn derived_quantization(spec: &ModelSpec, profile: &RunProfile) -> String {
    let mut by_type: Vec<(model_spec::DType, u64)> = Vec::new();
    for row in spec.components.iter().flat_map(|c| &c.weights.inventory) {
        match by_type.iter_mut().find(|(d, _)| *d == row.dtype) {
            Some((_, b)) => *b += row.bytes,
            None => by_type.push((row.dtype, row.bytes)),
        }
    }
    let Some((dtype, _)) = by_type.into_iter().max_by_key(|(_, b)| *b) else {
        return "unknown".to_owned();
    };
    match profile.load_dtype {
        Some(to) if dtype.is_float() && to != dtype => format!("{dtype} (loaded as {to})"),
        _ => dtype.to_string(),
    }
}
