//! The estimator against published facts and hand-computed formulas.

mod common;

use model_spec::estimate::{MB, estimate, loaded_weight_bytes};
use model_spec::{DType, RunProfile};

fn model(key: &str) -> model_spec::RegistryModel {
    common::registry()
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("{key} in the registry"))
}

fn weight_file_bytes(key: &str) -> (u64, u64) {
    let m = model(key);
    let c = &m.spec.spec.components[0];
    let published = c
        .weights
        .published_bytes
        .as_ref()
        .unwrap()
        .value
        .as_integer()
        .unwrap() as u64;
    (c.weights.total_bytes(), published)
}

fn within(actual: u64, published: u64, pct: f64) -> bool {
    (actual as f64 - published as f64).abs() <= published as f64 * pct / 100.0
}

#[test]
fn gguf_q4_k_m_weight_totals_are_within_3_percent_of_published_files() {
    for (key, published) in [
        ("microsoft/phi-4", 9_053_114_816u64),
        ("unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF", 18_556_689_568),
        // The Hub lists the 13 Kimi K2 parts as "621GB" (decimal GB); see the spec's source.
        ("unsloth/Kimi-K2-Instruct-GGUF", 621_000_000_000),
    ] {
        let (ours, recorded) = weight_file_bytes(key);
        assert_eq!(recorded, published, "{key}: published size in the spec");
        assert!(
            within(ours, published, 3.0),
            "{key}: {ours} B vs published {published} B"
        );
    }
}

#[test]
fn gguf_inventories_use_the_real_q4_k_m_type_mix() {
    use std::collections::BTreeSet;
    for key in [
        "microsoft/phi-4",
        "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF",
        "unsloth/Kimi-K2-Instruct-GGUF",
    ] {
        let m = model(key);
        let types: BTreeSet<DType> = m.spec.spec.components[0]
            .weights
            .inventory
            .iter()
            .map(|r| r.dtype)
            .collect();
        for t in [DType::Q4K, DType::Q6K, DType::F32] {
            assert!(types.contains(&t), "{key} lacks {t}: {types:?}");
        }
    }
    // Phi-4's fused attn_qkv is Q5_K under Q4_K_M; Kimi's attn_k_b rows (128) fall back to Q5_0.
    let phi = model("microsoft/phi-4");
    assert!(
        phi.spec.spec.components[0]
            .weights
            .inventory
            .iter()
            .any(|r| r.dtype == DType::Q5K)
    );
    let kimi = model("unsloth/Kimi-K2-Instruct-GGUF");
    assert!(
        kimi.spec.spec.components[0]
            .weights
            .inventory
            .iter()
            .any(|r| r.dtype == DType::Q5_0)
    );
}

#[test]
fn clip_weights_are_within_1_percent_of_the_published_file() {
    let (ours, published) = weight_file_bytes("openai/clip-vit-base-patch32");
    assert_eq!(published, 605_157_884);
    assert!(within(ours, published, 1.0), "{ours} vs {published}");
}

#[test]
fn every_published_size_is_matched_by_the_components_stored_in_that_file() {
    // Components that share a file (SD3.5's MMDiT and VAE) are summed against it.
    for m in &common::registry().models {
        let mut by_file: std::collections::BTreeMap<&str, (u64, Option<u64>)> = Default::default();
        for c in &m.spec.spec.components {
            let e = by_file.entry(c.files[0].as_str()).or_default();
            e.0 += c.weights.total_bytes();
            if let Some(p) = &c.weights.published_bytes {
                e.1 = Some(p.get_value_u64());
            }
        }
        for (file, (ours, published)) in by_file {
            let Some(published) = published else { continue };
            assert!(
                within(ours, published, 3.0),
                "{} {file}: inventory {ours} B vs published {published} B",
                m.entry.key.get_ref()
            );
        }
    }
}

trait FactU64 {
    fn get_value_u64(&self) -> u64;
}
impl FactU64 for model_spec::Fact {
    fn get_value_u64(&self) -> u64 {
        self.value
            .as_integer()
            .map(|i| i as u64)
            .expect("integer fact")
    }
}

fn with_ctx(p: &RunProfile, ctx: u64, kv: DType) -> RunProfile {
    RunProfile {
        context_tokens: Some(ctx),
        kv_dtype: Some(kv),
        ..p.clone()
    }
}

#[test]
fn kv_cache_qwen3_coder_uses_explicit_head_dim_128_and_4_kv_heads() {
    let m = model("unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF");
    let p = with_ctx(&m.entry.profile, 4096, DType::F16);
    let e = estimate(&m.spec.spec, &p).unwrap();
    // 2 × 48 layers × 4 kv heads × 128 head_dim × 4096 tokens × 2 B. (hidden/heads = 64 would halve it.)
    assert_eq!(e.kv_cache_bytes, 2 * 48 * 4 * 128 * 4096 * 2);
    assert_eq!(e.kv_cache_bytes, 384 * MB);
}

#[test]
fn kv_cache_phi4_uses_10_kv_heads() {
    let m = model("microsoft/phi-4");
    let e = estimate(&m.spec.spec, &with_ctx(&m.entry.profile, 16384, DType::F16)).unwrap();
    assert_eq!(e.kv_cache_bytes, 2 * 40 * 10 * 128 * 16384 * 2);
    // The checked-in default profile (4096 tokens, F16 as the GGUF decoders cache by default).
    let d = estimate(&m.spec.spec, &m.entry.profile).unwrap();
    assert_eq!(m.entry.profile.kv_dtype, Some(DType::F16));
    assert_eq!(d.kv_cache_bytes, 2 * 40 * 10 * 128 * 4096 * 2);
}

#[test]
fn kv_cache_kimi_k2_is_the_mla_latent() {
    let m = model("unsloth/Kimi-K2-Instruct-GGUF");
    let e = estimate(&m.spec.spec, &with_ctx(&m.entry.profile, 8192, DType::F16)).unwrap();
    // 61 layers × (kv_lora_rank 512 + qk_rope_head_dim 64) × 8192 × 2 B — not 2·L·64 heads·192.
    assert_eq!(e.kv_cache_bytes, 61 * (512 + 64) * 8192 * 2);
}

#[test]
fn every_figure_is_positive_a_multiple_of_100_and_at_least_the_weights() {
    for m in &common::registry().models {
        let mem = m
            .spec
            .spec
            .memory
            .as_ref()
            .expect("gen-memory-specs has run");
        let mb = mem.est_memory_allocation_mb;
        assert!(mb > 0 && mb % 100 == 0, "{}: {mb}", m.entry.key.get_ref());
        let weights: u64 = m
            .spec
            .spec
            .components
            .iter()
            .map(|c| loaded_weight_bytes(c, &mem.profile))
            .sum();
        let staged = !mem.profile.co_resident;
        assert!(
            staged || mb * MB >= weights,
            "{}: {mb} MB < weights {weights} B",
            m.entry.key.get_ref()
        );
        assert!(mb * MB >= mem.total_bytes && (mb - 100) * MB < mem.total_bytes);
    }
}

#[test]
fn loader_conversions_count_in_the_weights() {
    // Jina is stored F16 and loaded F32: the weights part doubles.
    let m = model("jinaai/jina-embeddings-v2-base-en");
    let c = &m.spec.spec.components[0];
    assert_eq!(
        loaded_weight_bytes(c, &m.entry.profile),
        2 * c.weights.total_bytes()
    );
    // GTE-Qwen2 stores an untied lm_head the embedder never loads.
    let g = model("Alibaba-NLP/gte-Qwen2-1.5B-instruct");
    let c = &g.spec.spec.components[0];
    assert_eq!(
        loaded_weight_bytes(c, &g.entry.profile),
        c.weights.total_bytes() - 151_646 * 1536 * 4
    );
    // The GGUF decoders hold every matrix as stored, the token embedding included (its rows
    // are expanded on lookup): the weights are the file's bytes, and token_embd shares the
    // Q4_K row instead of getting a row of its own.
    let p = model("microsoft/phi-4");
    let c = &p.spec.spec.components[0];
    assert!(p.entry.profile.dequantize_on_load.is_empty());
    let named = |r: &model_spec::spec::InventoryRow| r.name.as_deref() == Some("token_embd.weight");
    assert!(!c.weights.inventory.iter().any(named));
    assert_eq!(
        loaded_weight_bytes(c, &p.entry.profile),
        c.weights.total_bytes()
    );
    // A profile that dequantizes it on load gets it a row of its own, counted as F32.
    let mut split = c.clone();
    split.weights.inventory = model_spec::shapes::inventory(
        &model_spec::shapes::derive(c).unwrap(),
        &["token_embd.weight".to_owned()],
    );
    assert_eq!(split.weights.total_bytes(), c.weights.total_bytes());
    let embd = split.weights.inventory.iter().find(|r| named(r)).unwrap();
    assert_eq!((embd.dtype, embd.params), (DType::Q4K, 100_352 * 5120));
    let dequantized = RunProfile {
        dequantize_on_load: vec!["token_embd.weight".into()],
        ..p.entry.profile.clone()
    };
    assert_eq!(
        loaded_weight_bytes(&split, &dequantized),
        c.weights.total_bytes() - embd.bytes + embd.params * 4
    );
}

#[test]
fn staged_diffusion_peaks_below_co_resident() {
    let m = model("black-forest-labs/FLUX.1-schnell");
    let co = estimate(&m.spec.spec, &m.entry.profile).unwrap();
    let staged = estimate(
        &m.spec.spec,
        &RunProfile {
            co_resident: false,
            ..m.entry.profile.clone()
        },
    )
    .unwrap();
    assert!(staged.total_bytes < co.total_bytes);
    // The peak stage is the denoiser: transformer weights (bf16) + its working set.
    let t = &staged
        .components
        .iter()
        .find(|c| c.name == "transformer")
        .unwrap();
    assert_eq!(staged.weights_bytes, t.weights_bytes);
    assert_eq!(staged.activations_bytes, t.activations_bytes);
}

#[test]
fn longer_context_grows_only_the_kv_cache_by_the_formula() {
    let m = model("microsoft/phi-4");
    let a = estimate(&m.spec.spec, &with_ctx(&m.entry.profile, 4096, DType::F32)).unwrap();
    let b = estimate(&m.spec.spec, &with_ctx(&m.entry.profile, 8192, DType::F32)).unwrap();
    assert_eq!(
        b.kv_cache_bytes - a.kv_cache_bytes,
        2 * 40 * 10 * 128 * 4096 * 4
    );
    assert_eq!(a.weights_bytes, b.weights_bytes);
    assert_eq!(a.activations_bytes, b.activations_bytes);
}
