//! Measured vs estimated memory, one model per child process (a clean resident-set baseline
//! each time):
//!
//! * the real all-MiniLM-L6-v2 (`tools/fetch-minilm.sh`, or `--minilm DIR`);
//! * the six families as tiny random-weight checkpoints (the test suite's);
//! * Jina v2 base and CLIP ViT-B/32 at full size with random weights, written from their real
//!   configurations (about 0.9 GB of scratch space; `--skip-full` leaves them out);
//! * any other checkpoint named with `--checkpoint FAMILY=DIR` (repeatable), say the full-size
//!   random Stella or GTE-Qwen2 that `encoder-speed --write` leaves under `.cache/full/`.
//!
//! Each child loads the model through the backends' loader, serves one request of the run
//! profile (batch × seq_len tokens; one image and one text for CLIP) and reports the resident
//! increase after the load, the peaks (all RSS, and anonymous memory without the mapped
//! checkpoint pages) and the estimator's figure for that very checkpoint (its config.json,
//! safetensors headers and tokenizer, under the registry's run profile on the CPU), rounded
//! up to 100 MB as the registry states it and unrounded (`est. total`, margin included): the
//! rounding alone puts a figure up to 100 MB above the peak, so small models are compared
//! on the unrounded total too.
//!
//! ```sh
//! cargo run --release -p model-measure --bin measure-memory
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use model_fixtures::embed::{ClipGeometry, JinaGeometry, tiny, write_clip, write_jina};
use model_fixtures::minilm::workspace;
use model_runtime::ModelDir;
use model_serving::config::backend_of_family;
use model_serving::report::{MB, ProfileRequest, measure_profile};
use model_serving::{DeclaredMemory, EmbedOptions, Family, ServedModel};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        // Child: --one LABEL FAMILY DIR [MAX_TOKENS]
        let max_tokens = args.get(4).map(|s| s.parse().expect("max tokens"));
        let out = measure_one(
            &args[1],
            args[2].parse().expect("family"),
            Path::new(&args[3]),
            max_tokens,
        );
        println!("{out}");
        return;
    }
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let scratch = value("--scratch")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/measure-memory"));
    let minilm = value("--minilm")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/all-MiniLM-L6-v2"));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch");

    let mut jobs: Vec<(String, Family, PathBuf, Option<usize>)> = Vec::new();
    if minilm.join("model.safetensors").is_file() {
        jobs.push(("all-MiniLM-L6-v2 (real)".into(), Family::Bert, minilm, None));
    } else {
        eprintln!(
            "skipping the real all-MiniLM-L6-v2: not in {} (run tools/fetch-minilm.sh)",
            minilm.display()
        );
    }
    for family in Family::ALL {
        let dir = tiny(family);
        jobs.push((format!("{family} (tiny)"), family, dir, None));
    }
    if !flag("--skip-full") {
        let jina = scratch.join("jina-full");
        std::fs::create_dir_all(&jina).unwrap();
        write_jina(&jina, &JinaGeometry::BASE);
        jobs.push((
            "jina-v2-base (full, random)".into(),
            Family::JinaBert,
            jina,
            None,
        ));
        let clip = scratch.join("clip-full");
        std::fs::create_dir_all(&clip).unwrap();
        write_clip(&clip, &ClipGeometry::VIT_B_32);
        jobs.push((
            "clip-vit-base-patch32 (full, random)".into(),
            Family::Clip,
            clip,
            None,
        ));
    }

    for (i, arg) in args.iter().enumerate() {
        if arg != "--checkpoint" {
            continue;
        }
        let named = args.get(i + 1).and_then(|v| v.split_once('='));
        let Some((family, dir)) = named else {
            eprintln!("--checkpoint takes FAMILY=DIR, e.g. stella=.cache/full/stella");
            std::process::exit(2);
        };
        let family: Family = family.parse().unwrap_or_else(|e| {
            eprintln!("--checkpoint {family}: {e}");
            std::process::exit(2);
        });
        jobs.push((
            format!("{family} ({dir})"),
            family,
            PathBuf::from(dir),
            None,
        ));
    }

    // Written back before measuring, so that every child maps clean page-cache pages.
    for (_, _, dir, _) in &jobs {
        for entry in std::fs::read_dir(dir).expect("checkpoint dir").flatten() {
            if let Ok(f) = std::fs::File::open(entry.path()) {
                let _ = f.sync_all();
            }
        }
    }
    let exe = std::env::current_exe().expect("own path");
    println!(
        "| model | est. MB | est. total | weights | activations | overhead | files | resident | peak RSS | peak anon \
         | est ÷ peak RSS | total ÷ peak RSS | est ÷ peak anon |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, family, dir, max_tokens) in jobs {
        let mut cmd = Command::new(&exe);
        cmd.args(["--one", &label, family.as_str()]).arg(&dir);
        if let Some(n) = max_tokens {
            cmd.arg(n.to_string());
        }
        let out = cmd.output().expect("child");
        if !out.status.success() {
            eprintln!("{label}: {}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("child JSON");
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        let mib = |k: &str| format!("{:.1}", f(k) / MB);
        let ratio = |a: &str, b: &str| format!("{:.2}", f(a) * MB / f(b).max(1.0));
        let cells = [
            v["est_mb"].to_string(),
            mib("est_total"),
            mib("weights"),
            mib("activations"),
            mib("overhead"),
            mib("file_bytes"),
            mib("resident"),
            mib("peak_rss"),
            mib("peak_anon"),
            ratio("est_mb", "peak_rss"),
            format!("{:.2}", f("est_total") / f("peak_rss").max(1.0)),
            ratio("est_mb", "peak_anon"),
        ];
        println!("| {label} | {} |", cells.join(" | "));
    }
    println!(
        "\n(MB and MiB = 1,048,576 bytes; sizes in MiB; estimates for the CPU. resident: RSS increase once \
         loaded; peaks: load + one profile request over the pre-load baseline; anon: without file-backed pages.)"
    );
}

fn measure_one(
    label: &str,
    family: Family,
    dir: &Path,
    max_tokens: Option<usize>,
) -> serde_json::Value {
    let backend = backend_of_family(family);
    let md = ModelDir::local(dir).expect("checkpoint dir");
    // The registry's run profile, on the device measured here (the CPU): NV-Embed's profile
    // is CUDA, whose 512 MiB context would otherwise be in the figure.
    let template = model_serving::registry::template(backend).expect("template");
    let spec = model_serving::registry::spec(template).expect("spec");
    let mut profile = spec.spec.spec.profile().expect("profile").clone();
    profile.device = model_spec::Device::Cpu;
    let estimate = model_serving::checkpoint::estimate_checkpoint(backend, dir, Some(&profile))
        .expect("estimate");
    let mut files = md.safetensors("").expect("weights");
    if family == Family::Stella {
        let (dense, _) = model_networks::embed::stella::read_dense(&md).expect("dense");
        files.extend(md.safetensors(&dense).expect("dense weights"));
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let file_bytes: u64 = files.iter().map(|f| size(f)).sum();
    let declared = DeclaredMemory::of(template);
    let mut options = EmbedOptions::new().family(family);
    if let Some(d) = template.default_profile.load_dtype {
        options = options.dtype(model_runtime::parse_dtype(d).expect("dtype"));
    }
    let seq_len = declared.profile_seq_len.map(|s| {
        let own = model_networks::embed::own_limit(&md, family).expect("limit");
        (s as usize).min(own)
    });
    let request = ProfileRequest {
        batch: declared.profile_batch as usize,
        seq_len,
    };
    if let Some(n) = max_tokens {
        // Loaded for inputs up to `n` tokens; the request stays the profile's.
        options = options.max_input_tokens(n);
    }
    let config = ServedModel::new(template.registry_key, dir, options);
    let (model, m) = measure_profile(&config, request).expect("measure");
    drop(model);
    json!({
        "label": label,
        "est_mb": estimate.est_memory_allocation_mb,
        "est_total": estimate.total_bytes,
        "file_bytes": file_bytes,
        "weights": estimate.weights_bytes,
        "activations": estimate.activations_bytes,
        "overhead": estimate.overhead_bytes,
        "resident": m.load.resident_bytes,
        "load_peak_rss": m.load.peak_rss_bytes,
        "peak_rss": m.peak_rss_bytes,
        "peak_anon": m.peak_anon_bytes,
        "after_request": m.after_request_bytes,
        "load_ms": m.load.load_millis,
    })
}
