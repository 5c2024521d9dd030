//! Measured vs estimated memory of the tiny random-weight generators the tests use (Phi-3 and
//! Qwen3-MoE GGUFs, LLaVA 1.5 safetensors), one process per model so that no model's freed
//! memory is reused by the next one's measurement.
//!
//! ```text
//! cargo run --release -p model-measure --bin generate-memory
//! ```
//!
//! For each model: the estimator's figure for the checkpoint under a profile whose context is
//! exactly the measured request (prompt + new tokens), its parts, the resident set after the
//! load and warm-up pass, and the peak while serving the request.

use std::process::Command;

use model_fixtures::decode as support;
use model_registry::Backend;
use model_serving::checkpoint::estimate_checkpoint;
use model_serving::generate::measure::measure_profile;
use model_serving::{GenMemory, ServedModel};
use model_spec::RunProfile;

const MB: f64 = 1_048_576.0;

struct Case {
    name: &'static str,
    backend: Backend,
    prompt: usize,
    new: usize,
}

const CASES: [Case; 3] = [
    Case {
        name: "tiny-phi3",
        backend: Backend::Phi3Gguf,
        prompt: 256,
        new: 64,
    },
    Case {
        name: "tiny-qwen3moe",
        backend: Backend::Qwen3MoeGguf,
        prompt: 256,
        new: 64,
    },
    Case {
        name: "tiny-llava",
        backend: Backend::Llava15,
        prompt: 68,
        new: 32,
    },
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        return one(&args[i + 1]);
    }
    println!(
        "{:<15} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>7}",
        "model",
        "est. total",
        "weights",
        "kv",
        "activ.",
        "overhead",
        "resident",
        "peak",
        "est/peak",
        "tok/s"
    );
    for case in &CASES {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--one", case.name])
            .output()
            .expect("child");
        if !out.status.success() {
            eprintln!("{}: {}", case.name, String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    println!(
        "(MB = 1,048,576 B; RSS deltas of a fresh process; est. total = the estimator's total_bytes before rounding)"
    );
}

fn one(name: &str) {
    let case = CASES.iter().find(|c| c.name == name).expect("case");
    let dir = model_fixtures::scratch(name);
    let (source, context_tokens) = match case.backend {
        Backend::Phi3Gguf => {
            let p = dir.join("tiny-phi3.gguf");
            support::write_phi3(&p, &support::Geometry::phi3(), 11);
            (p, case.prompt + case.new)
        }
        Backend::Qwen3MoeGguf => {
            let p = dir.join("tiny-qwen3moe.gguf");
            support::write_qwen3moe(&p, &support::Geometry::qwen3moe(), 12);
            (p, case.prompt + case.new)
        }
        Backend::Llava15 => {
            support::write_llava(&dir, 22);
            (dir.clone(), case.prompt + case.new)
        }
        other => unreachable!("{other} is not a generator case"),
    };
    let template = model_serving::registry::template(case.backend).unwrap();
    let mut profile: RunProfile = model_serving::registry::spec(template)
        .unwrap()
        .spec
        .spec
        .profile()
        .unwrap()
        .clone();
    profile.device = model_spec::Device::Cpu;
    profile.context_tokens = Some(context_tokens as u64);
    // LLaVA's prompt_tokens count text only; the image's features come on top.
    profile.prompt_tokens = Some(match case.backend {
        Backend::Llava15 => (case.prompt - 4) as u64,
        _ => case.prompt as u64,
    });
    let est = estimate_checkpoint(case.backend, &source, Some(&profile)).unwrap();
    let config = ServedModel::registry(template.registry_key, &source)
        .unwrap()
        .map_generate(|o| {
            o.context_tokens(context_tokens)
                .prefill_chunk(case.prompt)
                .memory(GenMemory::from_estimate(&est, context_tokens as u64))
        })
        .unwrap();
    let image = support::test_image([255, 0, 0], [0, 0, 255]);
    let image = (case.backend == Backend::Llava15).then_some(&image);
    let (_model, run) = measure_profile(&config, case.prompt, case.new, None, image).unwrap();
    let mb = |b: u64| b as f64 / MB;
    println!(
        "{:<15} {:>10.1} {:>9.1} {:>9.2} {:>9.2} {:>9.1} {:>10.1} {:>10.1} {:>10.2} {:>7.0}",
        name,
        mb(est.total_bytes),
        mb(est.weights_bytes),
        mb(est.kv_cache_bytes),
        mb(est.activations_bytes),
        mb(est.overhead_bytes),
        mb(run.load.resident_bytes),
        mb(run.peak_bytes),
        est.total_bytes as f64 / run.peak_bytes.max(1) as f64,
        run.decode_tokens_per_second(),
    );
}
