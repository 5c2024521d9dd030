//! Plans for fixed machine descriptions, on the real registry and the real estimator.

use model_plan::size::{GIB, MIB, TIB};
use model_plan::{
    BudgetPolicy, GpuKind, Machine, Plan, PlanDevice, PlanRequest, ProfileOverrides, Staging, Tier,
    plan,
};
use model_spec::{DType, MB, Registry, estimate};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn registry() -> Registry {
    let cards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../model-cards");
    Registry::load(&cards).expect("the checked-in model cards load")
}

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
const JINA: &str = "jinaai/jina-embeddings-v2-base-en";
const CLIP: &str = "openai/clip-vit-base-patch32";
const STELLA: &str = "dunzhang/stella_en_1.5B_v5";
const GTE: &str = "Alibaba-NLP/gte-Qwen2-1.5B-instruct";
const PHI4: &str = "microsoft/phi-4";
const LLAVA: &str = "llava-hf/llava-1.5-7b-hf";
const NV_EMBED: &str = "nvidia/NV-Embed-v2";
const QWEN3: &str = "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF";
const SD35: &str = "stabilityai/stable-diffusion-3.5-large-turbo";
const FLUX: &str = "black-forest-labs/FLUX.1-schnell";
const KIMI: &str = "unsloth/Kimi-K2-Instruct-GGUF";

fn laptop() -> Machine {
    Machine::with_ram(24 * GIB)
}
fn workstation() -> Machine {
    Machine::with_ram(128 * GIB).gpu(GpuKind::Cuda, 24 * GIB)
}
/// 17 GiB, no GPU: an 11,819 MB budget, just enough for Phi-4 (11,200 MB); 16 GiB
/// (10,895 MB) is not.
fn ram_17_gib() -> Machine {
    Machine::with_ram(17 * GIB)
}
/// 1 TiB: a 942,448 MB budget, where every model fits at once (839,200 MB with the CUDA
/// models on the CPU), Kimi K2 (681,400 MB) included.
fn everything_fits() -> Machine {
    Machine::with_ram(TIB)
}

fn make(reg: &Registry, m: &Machine, req: &PlanRequest) -> Plan {
    let p = plan(reg, m, &BudgetPolicy::default(), req).expect("plan");
    check_invariants(reg, &p);
    p
}

fn set(p: &Plan, tier: Tier, device: PlanDevice) -> BTreeSet<&str> {
    p.models
        .iter()
        .filter(|m| m.tier == tier && m.device == device)
        .map(|m| m.key.as_str())
        .collect()
}

fn keys<'a>(k: &[&'a str]) -> BTreeSet<&'a str> {
    k.iter().copied().collect()
}

/// What must hold for every plan, whatever the machine.
fn check_invariants(reg: &Registry, p: &Plan) {
    for d in &p.devices {
        let on: Vec<_> = p.models.iter().filter(|m| m.device == d.device).collect();
        let hot: u64 = on
            .iter()
            .filter(|m| m.tier == Tier::Hot)
            .map(|m| m.reservation_bytes())
            .sum();
        let warm: Vec<u64> = on
            .iter()
            .filter(|m| m.tier == Tier::Warm)
            .map(|m| m.reservation_bytes())
            .collect();
        let largest = warm.iter().copied().max().unwrap_or(0);
        assert_eq!(d.hot_bytes, hot, "{}", d.device);
        assert_eq!(d.largest_warm_bytes, largest, "{}", d.device);
        // The hot set leaves room for the largest warm model.
        assert!(hot + largest <= d.budget_bytes, "{d:?}");
        assert_eq!(d.headroom_bytes, d.budget_bytes - hot - largest);
        // No warm model could be made hot as well.
        for (i, &w) in warm.iter().enumerate() {
            let rest = warm
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, &x)| x)
                .max()
                .unwrap_or(0);
            assert!(
                hot + w + rest > d.budget_bytes,
                "{} could also be hot",
                w / MB
            );
        }
        for m in &on {
            match m.tier {
                Tier::Never => {
                    assert!(m.reservation_bytes() > d.budget_bytes, "{}", m.key);
                    assert_eq!(
                        m.misses_by_bytes,
                        Some(m.reservation_bytes() - d.budget_bytes)
                    );
                }
                _ => {
                    assert!(m.reservation_bytes() <= d.budget_bytes, "{}", m.key);
                    assert_eq!(m.misses_by_bytes, None);
                }
            }
        }
    }
    // Every figure is the registry's estimator under the plan's profile.
    for m in &p.models {
        let r = reg.get(&m.key).unwrap();
        let e = estimate(&r.spec.spec, &m.profile).unwrap();
        assert_eq!(m.reservation_mb, e.est_memory_allocation_mb, "{}", m.key);
        assert_eq!(m.parts.total_bytes, e.total_bytes, "{}", m.key);
        assert_eq!(m.profile.device, m.device.estimator_device(), "{}", m.key);
        let default = estimate(&r.spec.spec, &r.entry.profile).unwrap();
        assert_eq!(m.registry_mb, default.est_memory_allocation_mb, "{}", m.key);
    }
}

#[test]
fn laptop_24_gib_no_gpu() {
    let reg = registry();
    let p = make(&reg, &laptop(), &PlanRequest::default());
    assert_eq!(p.devices.len(), 1, "RAM only");
    let cpu = PlanDevice::Cpu;
    // LLaVA (planned on the CPU, 18,100 MB) is the largest model that fits; it leaves
    // 188 MB of the 18,288 MB budget, less than the smallest model, so nothing stays hot.
    // Phi-4 (11,200 MB: its Q4_K_M blocks held once as stored, F16 KV cache) loads on
    // demand; Qwen3-Coder (21,000 MB) misses the laptop by 2,712 MB, and so does SD3.5
    // even staged (21,500 MB).
    assert_eq!(set(&p, Tier::Hot, cpu), keys(&[]));
    assert_eq!(
        set(&p, Tier::Warm, cpu),
        keys(&[MINILM, JINA, CLIP, STELLA, GTE, PHI4, NV_EMBED, LLAVA])
    );
    assert_eq!(set(&p, Tier::Never, cpu), keys(&[QWEN3, SD35, FLUX, KIMI]));
    assert_eq!(p.devices[0].largest_warm.as_deref(), Some(LLAVA));
    assert_eq!(p.model(PHI4).unwrap().reservation_mb, 11_200);
    let qwen = p.model(QWEN3).unwrap();
    assert_eq!(qwen.reservation_mb, 21_000);
    assert_eq!(
        qwen.misses_by_bytes.unwrap().div_ceil(MB),
        2712,
        "{:?}",
        qwen.misses_by_bytes
    );
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("nothing can stay resident"))
    );
    // GPU-profile models are planned on the CPU, re-estimated for it, and say so.
    let llava = p.model(LLAVA).unwrap();
    assert_eq!(llava.device, cpu);
    assert!(
        llava.reservation_mb < llava.registry_mb,
        "no CUDA context on the CPU"
    );
    assert!(llava.notes.iter().any(|n| n.contains("no GPU")));
    // FLUX misses even staged; the plan reports the staged peak and the shortfall from it.
    let flux = p.model(FLUX).unwrap();
    let st = flux.staging.unwrap();
    assert_eq!(st.used, Staging::Staged);
    assert!(st.staged_mb < st.co_resident_mb);
    assert_eq!(flux.reservation_mb, st.staged_mb);
    assert_eq!(
        flux.misses_by_bytes,
        Some(st.staged_mb * MB - p.devices[0].budget_bytes)
    );
}

#[test]
fn flux_uses_staged_components_where_co_resident_does_not_fit() {
    let reg = registry();
    // 48 GiB: budget 40,468 MB. FLUX co-resident on the CPU needs 40,600 MB, staged 28,600;
    // SD3.5 co-resident (34,000 MB) fits, so it stays co-resident and is the largest warm
    // model. Qwen3-Coder (21,000 MB) loads on demand here; only Kimi K2 misses.
    let p = make(&reg, &Machine::with_ram(48 * GIB), &PlanRequest::default());
    let budget = p.devices[0].budget_bytes;
    let flux = p.model(FLUX).unwrap();
    let st = flux.staging.unwrap();
    assert!(st.co_resident_mb * MB > budget, "{st:?} vs {}", budget / MB);
    assert!(st.staged_mb * MB <= budget);
    assert_eq!(st.used, Staging::Staged);
    assert_eq!(flux.tier, Tier::Warm);
    assert_eq!(flux.reservation_mb, st.staged_mb);
    assert!(!flux.profile.co_resident);
    let sd = p.model(SD35).unwrap();
    assert_eq!(sd.staging.unwrap().used, Staging::CoResident);
    assert!(sd.profile.co_resident);
    assert_eq!(
        set(&p, Tier::Hot, PlanDevice::Cpu),
        keys(&[MINILM, JINA, CLIP])
    );
    assert_eq!(p.devices[0].largest_warm.as_deref(), Some(SD35));
    assert_eq!(p.tier(QWEN3), Some(Tier::Warm));
    assert_eq!(set(&p, Tier::Never, PlanDevice::Cpu), keys(&[KIMI]));

    // On a 40 GiB GPU the same happens in VRAM: FLUX 41,200 MB co-resident > 36,480 MB,
    // staged 29,100 MB fits; SD3.5 co-resident (34,500 MB) fits.
    let a100 = Machine::with_ram(64 * GIB).gpu(GpuKind::Cuda, 40 * GIB);
    let p = make(&reg, &a100, &PlanRequest::default());
    let flux = p.model(FLUX).unwrap();
    assert_eq!(flux.device, PlanDevice::Cuda(0));
    assert_eq!(flux.staging.unwrap().used, Staging::Staged);
    assert_eq!(flux.tier, Tier::Warm);
    assert_eq!(
        p.model(SD35).unwrap().staging.unwrap().used,
        Staging::CoResident
    );

    // Asking for co-resident components makes FLUX miss on the 48 GiB machine instead.
    let req = PlanRequest {
        overrides: ProfileOverrides {
            staging: Some(Staging::CoResident),
            ..Default::default()
        },
        ..Default::default()
    };
    let p = make(&reg, &Machine::with_ram(48 * GIB), &req);
    assert_eq!(p.tier(FLUX), Some(Tier::Never));
}

#[test]
fn ram_64_gib_no_gpu() {
    let reg = registry();
    let p = make(&reg, &Machine::with_ram(64 * GIB), &PlanRequest::default());
    let cpu = PlanDevice::Cpu;
    // FLUX co-resident (40,600 MB) fits alone, so it stays co-resident, and it must be the
    // largest warm model: any smaller choice would need FLUX hot beside SD3.5 (74,600 MB
    // together, more than the budget). That leaves 14,655 MB of the 55,255 MB budget for the
    // smallest models: 200 + 700 + 700 + 6,900, room for one of Stella and GTE-Qwen2
    // (6,900 MB each) but not both, and on a tie the registry order decides: Stella.
    assert_eq!(set(&p, Tier::Hot, cpu), keys(&[MINILM, JINA, CLIP, STELLA]));
    assert_eq!(
        set(&p, Tier::Warm, cpu),
        keys(&[GTE, PHI4, NV_EMBED, LLAVA, QWEN3, SD35, FLUX])
    );
    assert_eq!(set(&p, Tier::Never, cpu), keys(&[KIMI]));
    assert_eq!(p.devices[0].largest_warm.as_deref(), Some(FLUX));
    assert_eq!(p.devices[0].hot_bytes, 8500 * MB);
    assert_eq!(
        p.model(FLUX).unwrap().staging.unwrap().used,
        Staging::CoResident
    );

    // 8 GiB more (62,648 MB budget) leave 22,048 MB beside FLUX: GTE-Qwen2 joins the hot
    // set (15,400 MB), and the 6,648 MB left are too few for Phi-4 (11,200 MB).
    let p = make(&reg, &Machine::with_ram(72 * GIB), &PlanRequest::default());
    assert_eq!(
        set(&p, Tier::Hot, cpu),
        keys(&[MINILM, JINA, CLIP, STELLA, GTE])
    );
    assert_eq!(p.devices[0].hot_bytes, 15_400 * MB);
    assert_eq!(p.tier(PHI4), Some(Tier::Warm));
    assert_eq!(p.devices[0].largest_warm.as_deref(), Some(FLUX));
}

#[test]
fn workstation_128_gib_and_24_gib_gpu() {
    let reg = registry();
    let p = make(&reg, &workstation(), &PlanRequest::default());
    let (cpu, gpu) = (PlanDevice::Cpu, PlanDevice::Cuda(0));
    assert_eq!(p.devices.len(), 2);
    // Every CPU model but Kimi K2 fits in RAM at once.
    assert_eq!(
        set(&p, Tier::Hot, cpu),
        keys(&[MINILM, JINA, CLIP, STELLA, GTE, PHI4, QWEN3])
    );
    assert_eq!(set(&p, Tier::Warm, cpu), keys(&[]));
    assert_eq!(set(&p, Tier::Never, cpu), keys(&[KIMI]));
    // The CUDA models count against the GPU: NV-Embed and LLaVA take turns, the diffusion
    // models miss even with staged components.
    assert_eq!(set(&p, Tier::Hot, gpu), keys(&[]));
    assert_eq!(set(&p, Tier::Warm, gpu), keys(&[NV_EMBED, LLAVA]));
    assert_eq!(set(&p, Tier::Never, gpu), keys(&[SD35, FLUX]));
    for key in [SD35, FLUX] {
        let m = p.model(key).unwrap();
        let st = m.staging.unwrap();
        assert_eq!(
            m.reservation_mb, st.staged_mb,
            "{key} reports the staged peak"
        );
        assert!(st.staged_mb < st.co_resident_mb);
        assert!(m.notes.iter().any(|n| n.contains("--cpu-fallback")));
    }
    let kimi = p.model(KIMI).unwrap();
    assert_eq!(
        kimi.misses_by_bytes,
        Some(kimi.reservation_bytes() - p.devices[0].budget_bytes)
    );

    // With --cpu-fallback the diffusion models run on the CPU, co-resident (34,000 and
    // 40,600 MB). Not everything fits the 114,401 MB budget at once any more (122,200 MB);
    // seven models can stay hot either with FLUX as the largest warm model (the five
    // embedders, Phi-4 and Qwen3-Coder, 47,600 MB hot) or with Qwen3-Coder as the largest
    // warm model (the five embedders and both diffusion models, 90,000 MB hot), and the plan
    // keeps the larger set resident. (With Phi-4 as the largest warm model the three larger
    // models must be hot, 106,800 MB with it, and only three embedders fit beside them.)
    let req = PlanRequest {
        cpu_fallback: true,
        ..Default::default()
    };
    let p = make(&reg, &workstation(), &req);
    assert_eq!(
        set(&p, Tier::Hot, cpu),
        keys(&[MINILM, JINA, CLIP, STELLA, GTE, SD35, FLUX])
    );
    assert_eq!(set(&p, Tier::Warm, cpu), keys(&[PHI4, QWEN3]));
    assert_eq!(set(&p, Tier::Never, gpu), keys(&[]));
    assert_eq!(p.device(cpu).unwrap().largest_warm.as_deref(), Some(QWEN3));
    assert_eq!(p.device(cpu).unwrap().hot_bytes, 90_000 * MB);
    for key in [SD35, FLUX] {
        let m = p.model(key).unwrap();
        assert_eq!(m.staging.unwrap().used, Staging::CoResident, "{key}");
        assert!(m.notes.iter().any(|n| n.contains("--cpu-fallback")));
    }
}

#[test]
fn kimi_k2_fits_the_1_tib_machine() {
    let reg = registry();
    // Kimi K2 needs 681,400 MB (its Q4_K_M blocks held once as stored, the token
    // embedding quantized, an F16 MLA cache): more than a 512 GiB machine's 469,278 MB
    // budget, so it misses every machine up to there. 768 GiB (705,863 MB) loads it on demand
    // with 24,463 MB beside it, and 1 TiB (942,448 MB) holds it together with everything else.
    let machines = [
        laptop(),
        Machine::with_ram(64 * GIB),
        workstation(),
        Machine::with_ram(512 * GIB),
        Machine::with_ram(768 * GIB),
        Machine::with_ram(TIB),
    ];
    let tiers: Vec<Tier> = machines
        .iter()
        .map(|m| make(&reg, m, &PlanRequest::default()).tier(KIMI).unwrap())
        .collect();
    assert_eq!(
        tiers,
        [
            Tier::Never,
            Tier::Never,
            Tier::Never,
            Tier::Never,
            Tier::Warm,
            Tier::Hot
        ]
    );
    // On 512 GiB every other model fits at once (with the CUDA models on the CPU, 157,800 MB);
    // only Kimi K2 misses, by 212,122 MB.
    let p = make(&reg, &Machine::with_ram(512 * GIB), &PlanRequest::default());
    assert!(
        p.models
            .iter()
            .all(|m| m.tier == Tier::Hot || m.key == KIMI)
    );
    let kimi = p.model(KIMI).unwrap();
    assert_eq!(kimi.misses_by_bytes.unwrap().div_ceil(MB), 212_122);
    // On 768 GiB Kimi K2 is the largest warm model and the five embedders stay hot.
    let p = make(&reg, &Machine::with_ram(768 * GIB), &PlanRequest::default());
    assert_eq!(p.devices[0].largest_warm.as_deref(), Some(KIMI));
    assert_eq!(
        set(&p, Tier::Hot, PlanDevice::Cpu),
        keys(&[MINILM, JINA, CLIP, STELLA, GTE])
    );
    // On 1 TiB everything is hot, Kimi K2 included.
    let p = make(&reg, &everything_fits(), &PlanRequest::default());
    assert!(p.models.iter().all(|m| m.tier == Tier::Hot));
    let kimi = p.model(KIMI).unwrap();
    assert_eq!(kimi.reservation_mb, 681_400);
    assert_eq!(p.devices[0].hot_bytes, 839_200 * MB);
}

/// KV bytes per token of a generator, from its spec: 2 × layers × kv_heads × head_dim ×
/// bytes, or for MLA (Kimi K2) layers × (kv_lora_rank + qk_rope_head_dim) × bytes.
fn kv_bytes_per_token(reg: &Registry, key: &str, kv_bytes: u64) -> u64 {
    let c = &reg.get(key).unwrap().spec.spec.components[0];
    let a = |k: &str| c.arch_u64(k).unwrap_or_else(|| panic!("{key}: {k}"));
    if let Some(rank) = c.arch_u64("kv_lora_rank") {
        a("num_hidden_layers") * (rank + a("qk_rope_head_dim")) * kv_bytes
    } else if key == LLAVA {
        let hd = c
            .arch_u64("text_head_dim")
            .unwrap_or(a("text_hidden_size") / a("text_num_attention_heads"));
        2 * a("text_num_hidden_layers") * a("text_num_key_value_heads") * hd * kv_bytes
    } else {
        2 * a("num_hidden_layers") * a("num_key_value_heads") * a("head_dim") * kv_bytes
    }
}

fn with(overrides: ProfileOverrides) -> PlanRequest {
    PlanRequest {
        overrides,
        ..Default::default()
    }
}

/// The reservation shrinks by the KV delta plus the model's margin on it; the other parts do
/// not move.
fn assert_shrinks_by(reg: &Registry, big: &Plan, small: &Plan, key: &str, kv_delta: u64) {
    let (b, s) = (big.model(key).unwrap(), small.model(key).unwrap());
    assert!(kv_delta > 0);
    assert_eq!(
        b.parts.kv_cache_bytes - s.parts.kv_cache_bytes,
        kv_delta,
        "{key}"
    );
    assert_eq!(b.parts.weights_bytes, s.parts.weights_bytes, "{key}");
    assert_eq!(
        b.parts.activations_bytes, s.parts.activations_bytes,
        "{key}"
    );
    assert_eq!(b.parts.overhead_bytes, s.parts.overhead_bytes, "{key}");
    let margin_percent = reg.get(key).unwrap().entry.profile.margin_percent;
    let margin_delta = b.parts.margin_bytes - s.parts.margin_bytes;
    // The margin is rounded up to whole bytes on each side, so it moves by the exact share
    // of the delta give or take one byte.
    let exact = kv_delta * margin_percent / 100;
    assert!(
        margin_delta.abs_diff(exact) <= 1,
        "{key}: {margin_delta} vs {exact}"
    );
    assert_eq!(
        b.parts.total_bytes - s.parts.total_bytes,
        kv_delta + margin_delta
    );
    // And the reservation is that total rounded up to 100 MB, like the registry figure.
    for m in [b, s] {
        assert_eq!(
            m.reservation_mb,
            m.parts.total_bytes.div_ceil(MIB).div_ceil(100) * 100
        );
    }
}

#[test]
fn shorter_context_shrinks_llm_reservations_by_the_kv_formula() {
    let reg = registry();
    // Every model hot at both lengths, so the device's hot bytes see every change.
    let big_box = everything_fits();
    let at = |ctx: u64| {
        make(
            &reg,
            &big_box,
            &with(ProfileOverrides {
                context_tokens: Some(ctx),
                ..Default::default()
            }),
        )
    };
    let (long, short) = (at(16_384), at(4096));
    let delta_ctx = 16_384 - 4096;
    // Every generator caches F16 by default: the GGUF ones (Phi-4, Qwen3-Coder, Kimi K2's MLA
    // latent) because their CPU profiles say so, LLaVA in its F16 activation type.
    for key in [PHI4, QWEN3, KIMI] {
        let profile = &long.model(key).unwrap().profile;
        assert_eq!(profile.kv_dtype, Some(DType::F16), "{key}");
    }
    for key in [PHI4, QWEN3, KIMI, LLAVA] {
        let delta = kv_bytes_per_token(&reg, key, 2) * delta_ctx;
        assert_shrinks_by(&reg, &long, &short, key, delta);
    }
    // Phi-4: 2 × 40 layers × 10 KV heads × 128 × 12,288 tokens × 2 B = 2,400 MB.
    assert_eq!(kv_bytes_per_token(&reg, PHI4, 2) * delta_ctx, 2400 * MB);
    // Kimi K2 (MLA): 61 × (512 + 64) × 12,288 × 2 B.
    assert_eq!(
        kv_bytes_per_token(&reg, KIMI, 2) * delta_ctx,
        61 * 576 * 12_288 * 2
    );
    // Encoders have no KV cache: unchanged.
    for key in [MINILM, NV_EMBED, FLUX] {
        assert_eq!(
            long.model(key).unwrap().parts,
            short.model(key).unwrap().parts,
            "{key}"
        );
    }
    // The device's hot bytes shrink by the sum of the reservation changes.
    assert!(long.models.iter().all(|m| m.tier == Tier::Hot));
    assert!(short.models.iter().all(|m| m.tier == Tier::Hot));
    let shrink: u64 = long
        .models
        .iter()
        .zip(&short.models)
        .map(|(l, s)| l.reservation_bytes() - s.reservation_bytes())
        .sum();
    assert_eq!(
        long.devices[0].hot_bytes - short.devices[0].hot_bytes,
        shrink
    );
}

#[test]
fn smaller_kv_dtype_shrinks_llm_reservations_by_the_kv_formula() {
    let reg = registry();
    let big_box = Machine::with_ram(TIB);
    let kv = |d: DType| {
        make(
            &reg,
            &big_box,
            &with(ProfileOverrides {
                kv_dtype: Some(d),
                ..Default::default()
            }),
        )
    };
    let (f32_plan, f16_plan) = (kv(DType::F32), kv(DType::F16));
    for key in [PHI4, QWEN3, KIMI, LLAVA] {
        let ctx = reg.get(key).unwrap().entry.profile.context_tokens.unwrap();
        let delta = (kv_bytes_per_token(&reg, key, 4) - kv_bytes_per_token(&reg, key, 2)) * ctx;
        assert_shrinks_by(&reg, &f32_plan, &f16_plan, key, delta);
    }
}

/// Phi-4 misses 16 GiB (10,895 MB budget) even at 4k tokens (11,200 MB); on 17 GiB
/// (11,819 MB) it fits at 4k, and 16k tokens (14,000 MB: 2,400 MB more F16 KV cache plus its
/// margin) push it out. At 16k it takes 20 GiB (14,592 MB); 19 GiB (13,667 MB) still misses.
#[test]
fn phi4_at_16k_no_longer_fits_17_gib() {
    let reg = registry();
    let set_phi = |ctx: u64| PlanRequest {
        per_model: BTreeMap::from([(
            "phi-4".to_owned(),
            ProfileOverrides {
                context_tokens: Some(ctx),
                ..Default::default()
            },
        )]),
        ..Default::default()
    };
    let on_16_gib = make(&reg, &Machine::with_ram(16 * GIB), &set_phi(4096));
    assert_eq!(on_16_gib.tier(PHI4), Some(Tier::Never));
    let p4k = make(&reg, &ram_17_gib(), &set_phi(4096));
    let p16k = make(&reg, &ram_17_gib(), &set_phi(16_384));
    assert_eq!(p4k.tier(PHI4), Some(Tier::Warm));
    assert_eq!(p16k.tier(PHI4), Some(Tier::Never));
    assert_eq!(p4k.model(PHI4).unwrap().reservation_mb, 11_200);
    assert_eq!(p16k.model(PHI4).unwrap().reservation_mb, 14_000);
    // Where 16k tokens fit again: not on 19 GiB, on 20 GiB.
    let on_19_gib = make(&reg, &Machine::with_ram(19 * GIB), &set_phi(16_384));
    assert_eq!(on_19_gib.tier(PHI4), Some(Tier::Never));
    let on_20_gib = make(&reg, &Machine::with_ram(20 * GIB), &set_phi(16_384));
    assert_eq!(on_20_gib.tier(PHI4), Some(Tier::Warm));
    // Only Phi-4 changed: the per-model setting does not touch the other generators.
    assert_eq!(
        p4k.model(QWEN3).unwrap().parts,
        p16k.model(QWEN3).unwrap().parts
    );
    assert_eq!(
        p16k.model(PHI4).unwrap().profile.context_tokens,
        Some(16_384)
    );
}

#[test]
fn subsets_and_unknown_models() {
    let reg = registry();
    let req = PlanRequest {
        models: vec!["phi-4".into(), "all-minilm-l6-v2".into(), MINILM.into()],
        ..Default::default()
    };
    let p = make(&reg, &ram_17_gib(), &req);
    let got: Vec<&str> = p.models.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(got, [MINILM, PHI4], "registry order, no duplicates");
    // 11,200 + 200 fit the 11,819 MB budget together: both hot (with all models planned,
    // Phi-4 is the largest warm model there and only MiniLM stays hot).
    assert!(p.models.iter().all(|m| m.tier == Tier::Hot));

    let req = PlanRequest {
        models: vec!["llama-7b".into()],
        ..Default::default()
    };
    let e = plan(&reg, &laptop(), &BudgetPolicy::default(), &req).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("unknown model `llama-7b`"), "{msg}");
    assert!(msg.contains(PHI4), "lists the registry keys: {msg}");

    let req = with(ProfileOverrides {
        kv_dtype: Some(DType::Q4K),
        ..Default::default()
    });
    let e = plan(&reg, &laptop(), &BudgetPolicy::default(), &req).unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
}

#[test]
fn a_larger_reserve_moves_models_down_a_tier() {
    let reg = registry();
    // The original guide's budget: 16 GB for the OS and a 15 % buffer. On 64 GiB that leaves
    // 41,779 MB instead of 55,255 MB: FLUX co-resident (40,600 MB) still loads and stays the
    // largest warm model, but with only 1,179 MB beside it instead of 14,655 MB, so only the
    // two smallest embedders stay hot instead of four: CLIP and Stella drop to warm. Nothing
    // moves up a tier, and what loads with our reserve still loads (Qwen3-Coder, 21,000 MB,
    // included); only Kimi K2 misses either way.
    let mut guide = BudgetPolicy::default();
    guide.ram.reserve_base_bytes = 16 * GIB;
    guide.ram.reserve_percent = 0;
    guide.ram.margin_percent = 15;
    let m = Machine::with_ram(64 * GIB);
    let ours = make(&reg, &m, &PlanRequest::default());
    let theirs = plan(&reg, &m, &guide, &PlanRequest::default()).unwrap();
    check_invariants(&reg, &theirs);
    assert!(theirs.devices[0].budget_bytes < ours.devices[0].budget_bytes);
    assert_eq!(
        set(&theirs, Tier::Hot, PlanDevice::Cpu),
        keys(&[MINILM, JINA])
    );
    assert_eq!(
        set(&ours, Tier::Hot, PlanDevice::Cpu),
        keys(&[MINILM, JINA, CLIP, STELLA])
    );
    assert_eq!(theirs.tier(CLIP), Some(Tier::Warm));
    assert_eq!(theirs.tier(STELLA), Some(Tier::Warm));
    assert_eq!(theirs.devices[0].largest_warm.as_deref(), Some(FLUX));
    assert_eq!(ours.devices[0].largest_warm.as_deref(), Some(FLUX));
    for m in &ours.models {
        assert!(theirs.tier(&m.key).unwrap() >= m.tier, "{}", m.key);
    }
    assert_eq!(ours.tier(QWEN3), Some(Tier::Warm));
    assert_eq!(theirs.tier(QWEN3), Some(Tier::Warm));
    assert_eq!(set(&theirs, Tier::Never, PlanDevice::Cpu), keys(&[KIMI]));
}

#[test]
fn plans_round_trip_through_json_and_toml() {
    let reg = registry();
    let req = PlanRequest {
        overrides: ProfileOverrides {
            context_tokens: Some(8192),
            ..Default::default()
        },
        per_model: BTreeMap::from([(
            PHI4.to_owned(),
            ProfileOverrides {
                kv_dtype: Some(DType::F16),
                ..Default::default()
            },
        )]),
        cpu_fallback: true,
        ..Default::default()
    };
    let p = make(&reg, &workstation(), &req);
    let json = p.to_json();
    assert_eq!(Plan::from_json(&json).unwrap(), p);
    let toml = p.to_toml().unwrap();
    assert_eq!(Plan::from_toml(&toml).unwrap(), p);
    assert!(
        json.contains(r#""device": "cuda:0""#),
        "pool DeviceId spelling"
    );

    let dir = std::env::temp_dir().join(format!("model-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["plan.json", "plan.toml"] {
        let path = dir.join(name);
        p.save(&path).unwrap();
        assert_eq!(Plan::load(&path).unwrap(), p);
    }
    let e = p.save(&dir.join("plan.yaml")).unwrap_err();
    assert!(e.to_string().contains(".json"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();

    let stale = json.replace("\"format_version\": 1", "\"format_version\": 99");
    let e = Plan::from_json(&stale).unwrap_err();
    assert!(e.to_string().contains("cargo xtask plan"), "{e}");
}
