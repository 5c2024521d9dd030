//! The text-to-image networks against candle's own, and the prompt tokenizers, on tiny
//! random-weight checkpoints written by `model-fixtures` in the real repositories' layout:
//!
//! * the FLUX.1-schnell loop (our schedule and Euler steps over candle's `Flux`) is candle's
//!   `flux::sampling::denoise`, to the bit;
//! * the MMDiT assembled from candle's blocks gives candle's `MMDiT` velocity in F16 (the only
//!   dtype candle's runs in);
//! * CLIP's byte-level BPE from `vocab.json` + `merges.txt` and T5's `tokenizer.json` give
//!   fixed-length sequences as Diffusers builds them.

use candle_core::{DType, Device, Tensor};
use model_fixtures::diffusion::{self as random, Geometry};
use model_networks::Pipeline;
use model_networks::diffusion::tokenizer::PromptTokenizer;
use model_networks::diffusion::{flux, layout, mmdit, sampler, var_builder};
use model_runtime::ModelDir;

/// A tiny random checkpoint of `pipeline` and its transformer's files, as the registry spec
/// names them.
fn tiny_transformer(pipeline: Pipeline, name: &str) -> (ModelDir, layout::Resolved) {
    let dir = model_fixtures::scratch(name);
    random::write(&dir, pipeline, &Geometry::tiny(pipeline), 5).unwrap();
    let template =
        model_serving::registry::template(model_serving::text_to_image::backend_of(pipeline))
            .unwrap();
    let spec = &model_serving::registry::spec(template).unwrap().spec.spec;
    let md = ModelDir::local(&dir).unwrap();
    let transformer = layout::resolve(pipeline, spec, &md, "transformer").unwrap();
    (md, transformer)
}

#[test]
fn the_schnell_loop_is_candles_denoise() {
    use candle_transformers::models::flux::WithForward;
    use candle_transformers::models::flux::model::Flux;
    use candle_transformers::models::flux::sampling::{State, denoise, unpack};

    let (md, transformer) = tiny_transformer(Pipeline::Flux, "flux-loop");
    let dev = Device::Cpu;
    let config = flux::TransformerConfig::read(&transformer.config)
        .unwrap()
        .candle()
        .unwrap();
    let vb = var_builder(&transformer, DType::F32, &dev).unwrap();
    let model = Flux::new(&config, vb).unwrap();
    // The tiny geometry: a 48-wide T5 context, a 32-wide pooled CLIP vector.
    let txt = sampler::noise(1, (1, 1, 16, 48), &dev, DType::F32)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let vec = sampler::noise(2, (1, 1, 1, 32), &dev, DType::F32)
        .unwrap()
        .reshape((1, 32))
        .unwrap();
    let noise = sampler::noise(3, (1, 16, 8, 6), &dev, DType::F32).unwrap();
    let s = State::new(&txt, &vec, &noise).unwrap();
    let schedule = sampler::flux_schnell_schedule(3);
    // The loop the serving pipeline runs.
    let ours = sampler::euler::<candle_core::Error>(
        s.img.clone(),
        &schedule,
        |x, t| {
            let t = Tensor::full(t as f32, 1, &dev)?;
            model.forward(x, &s.img_ids, &s.txt, &s.txt_ids, &t, &s.vec, None)
        },
        |_| Ok(()),
    )
    .unwrap();
    let reference = denoise(
        &model, &s.img, &s.img_ids, &s.txt, &s.txt_ids, &s.vec, &schedule, 0.0,
    )
    .unwrap();
    let diff: f32 = (ours - &reference)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(diff, 0.0);
    let image = unpack(&reference, 64, 48).unwrap();
    assert_eq!(image.dims(), &[1, 16, 8, 6]);
    random::remove(md.root()).unwrap();
}

/// The network assembled here is candle's `MMDiT` except for the dtype of the timestep
/// embedding: in F16, where candle's runs, both give the same velocity.
#[test]
fn the_assembled_mmdit_matches_candles_in_f16() {
    use candle_transformers::models::mmdit::model::{Config as CandleConfig, MMDiT};

    let (md, transformer) = tiny_transformer(Pipeline::Sd3, "mmdit");
    let dev = Device::Cpu;
    let c = mmdit::TransformerConfig::read(&transformer.config).unwrap();
    let vb = || var_builder(&transformer, DType::F16, &dev).unwrap();
    let ours = mmdit::Mmdit::load(&c, vb()).unwrap();
    let cfg = CandleConfig {
        patch_size: c.patch_size,
        in_channels: c.in_channels,
        out_channels: c.out_channels,
        depth: c.num_layers,
        head_size: c.attention_head_dim,
        adm_in_channels: c.pooled_projection_dim,
        pos_embed_max_size: c.pos_embed_max_size,
        context_embed_size: c.joint_attention_dim,
        frequency_embedding_size: 256,
    };
    let theirs = MMDiT::new(&cfg, false, vb()).unwrap();
    let noise = |seed, shape| sampler::noise(seed, shape, &dev, DType::F16).unwrap();
    let x = noise(1, (1, 16, 8, 6));
    let y = noise(2, (1, 1, 1, 64)).reshape((1, 64)).unwrap();
    let context = noise(3, (1, 1, 20, 96)).squeeze(0).unwrap();
    let t = 750.0;
    let a = ours.forward(&x, t, &y, &context).unwrap();
    let b = theirs
        .forward(
            &x,
            &Tensor::new(&[t as f32], &dev).unwrap(),
            &y,
            &context,
            None,
        )
        .unwrap();
    let f32s = |t: Tensor| -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, b) = (f32s(a), f32s(b));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(
        scale > 0.0 && worst <= 0.02 * scale,
        "max |Δ| {worst} of {scale}"
    );
    random::remove(md.root()).unwrap();
}

#[test]
fn clip_bpe_from_vocab_and_merges_matches_clips_rules() {
    let dir = model_fixtures::scratch("clip-tokenizer");
    random::clip_tokenizer(&dir, true).unwrap();
    let t = PromptTokenizer::clip(&dir, 10).unwrap();
    let id = |s: &str| t.token_id(s).unwrap();
    let tokens = t.encode("The  FOX!").unwrap();
    // Lower-cased, split into words and punctuation, merged ("t h", "th e</w>"), wrapped in
    // start/end tokens and padded with SD3 bigG's `!`.
    let words = [
        "<|startoftext|>",
        "the</w>",
        "f",
        "o",
        "x</w>",
        "!</w>",
        "<|endoftext|>",
    ];
    let mut want: Vec<u32> = words.iter().map(|w| id(w)).collect();
    want.resize(10, id("!"));
    assert_eq!(tokens.ids, want);
    assert_eq!((tokens.eos, tokens.truncated), (6, false));
    let cut = PromptTokenizer::clip(&dir, 4)
        .unwrap()
        .encode("the fox")
        .unwrap();
    assert_eq!(
        cut.ids,
        vec![
            id("<|startoftext|>"),
            id("the</w>"),
            id("f"),
            id("<|endoftext|>")
        ]
    );
    assert_eq!((cut.eos, cut.truncated), (3, true));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn t5_ends_with_eos_and_pads_with_pad() {
    let dir = model_fixtures::scratch("t5-tokenizer");
    random::t5_tokenizer(&dir).unwrap();
    let t = PromptTokenizer::t5(&dir, 6).unwrap();
    let tokens = t.encode("A red FOX").unwrap();
    let id = |s: &str| t.token_id(s).unwrap();
    assert_eq!(
        tokens.ids,
        vec![
            id("a"),
            id("red"),
            id("fox"),
            id("</s>"),
            id("<pad>"),
            id("<pad>")
        ]
    );
    let missing = PromptTokenizer::t5(&dir.join("nowhere"), 6).unwrap_err();
    assert!(missing.to_string().contains("tokenizer.json"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}
