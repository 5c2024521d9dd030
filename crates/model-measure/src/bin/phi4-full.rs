//! Full-size Phi-4 Q4_K_M geometry with random weights: estimated vs measured memory and the
//! decode rate on the CPU, directly and through the pool.
//!
//! ```text
//! flock /tmp/heavy-measure.lock cargo run --release -p model-measure --bin phi4-full
//! ```
//!
//! 1. Writes a GGUF with exactly the tensors the estimator derives from the Phi-4 model card
//!    (names, ggml shapes, llama.cpp's Q4_K_M types; 9.05 GB) into a temporary directory,
//!    streaming it so that the writer never holds the weights. Blocks are random, with small
//!    valid f16 scales; the metadata are Phi-4's (RoPE base 250 000) plus a byte-level
//!    vocabulary, padded with unused tokens to the embedding's 100,352 rows, so that both the
//!    pool and llama.cpp can load and tokenize it.
//! 2. In a fresh process: loads it through the backend's loader (the same code as for the
//!    real file), runs one request of the run profile (512 prompt tokens prefilled at once,
//!    then greedy decoding) and records the resident set and its peak.
//! 3. In another fresh process: decode throughput on one loaded copy, through
//!    `ModelPool::generate`, then through a lease and a bare session, then the pool again
//!    (a shorter prompt, `--tput-prompt`, 64 tokens by default).
//! 4. Deletes the file (unless `--keep`).
//!
//! `phi4-full streams --dir D` (on a file written by `write`) measures continuous batching:
//! one request alone, then `--streams` concurrent ones, through the pool on one loaded copy;
//! the decode rate of each is counted over the time all of them were decoding.
//!
//! `phi4-full --help` lists the options; `phi4-full write --dir D` only writes the file (for
//! llama.cpp: `tools/llama-cpp-compare.sh`).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::{Parser, ValueEnum};

use model_fixtures::decode as support;
use model_pool::{DeviceId, MemoryGovernor};
use model_registry::Backend;
use model_serving::checkpoint::estimate_checkpoint;
use model_serving::generate::measure::measure_profile;
use model_serving::generate::sampling::argmax;
use model_serving::loader::{CapabilityLease, LoadedModel};
use model_serving::{GenerateRequest, ModelPool, ServedModel};
use model_spec::RunProfile;
use model_spec::shapes::TensorDesc;

const KEY: &str = "microsoft/phi-4";
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MB: f64 = 1_048_576.0;

/// Full-size random Phi-4 Q4_K_M: estimated against measured memory, prefill and decode speed
/// on the CPU, directly and through the pool (module docs: what each step does).
#[derive(Parser)]
#[command(version)]
struct Opts {
    /// The step to run; without one, `write`, `direct` and `pool` each in a fresh process,
    /// then the file is deleted.
    #[arg(value_enum)]
    mode: Option<Mode>,
    /// Where the GGUF is written (and read): a new temporary directory by default.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Fewer layers (same shapes), for a quick check.
    #[arg(long)]
    layers: Option<u64>,
    /// Prompt tokens of the measured request (prefilled at once).
    #[arg(long, default_value_t = 512)]
    prompt: usize,
    /// Tokens decoded after the prompt.
    #[arg(long, default_value_t = 16)]
    new: usize,
    /// Prompt tokens of the throughput runs through the pool.
    #[arg(long, default_value_t = 64)]
    tput_prompt: usize,
    /// Tokens the request's KV cache holds (at least prompt + new).
    #[arg(long, default_value_t = 4096)]
    context: usize,
    /// Keep the file after a full run.
    #[arg(long)]
    keep: bool,
    /// Skip the throughput runs through the pool.
    #[arg(long)]
    skip_pool: bool,
    /// Concurrent requests of the `streams` mode.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Rounds of the `streams` mode: one request, then the concurrent ones, alternating,
    /// ending with one request; each round's ratio is against the mean of the one-request
    /// runs on either side of it (this machine's speed drifts).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Only write the GGUF (for llama.cpp: `tools/llama-cpp-compare.sh`).
    Write,
    /// Load it and run one request of the run profile: memory, prefill and decode.
    Direct,
    /// Decode throughput through the pool, a lease and a bare session.
    Pool,
    /// Aggregate decode throughput of `--streams` concurrent requests against one request,
    /// through the pool on one loaded copy (their steps batched).
    Streams,
}

fn main() {
    let mut o = Opts::parse();
    let dir = o
        .dir
        .get_or_insert_with(|| {
            std::env::temp_dir().join(format!("phi4-full-{}", std::process::id()))
        })
        .clone();
    let file = dir.join("phi-4-Q4_K_M.gguf");
    match o.mode {
        Some(Mode::Write) => return write(&file, o.layers),
        Some(Mode::Direct) => return direct(&file, &o),
        Some(Mode::Pool) => return pool(&file, &o),
        Some(Mode::Streams) => return streams(&file, &o),
        None => {}
    }
    std::fs::create_dir_all(&dir).unwrap();
    let child = |mode: Mode| {
        let name = mode.to_possible_value().expect("every mode has a name");
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.arg(name.get_name()).arg("--dir").arg(&dir);
        for (flag, value) in [
            ("--prompt", o.prompt),
            ("--new", o.new),
            ("--tput-prompt", o.tput_prompt),
            ("--context", o.context),
        ] {
            cmd.arg(flag).arg(value.to_string());
        }
        if let Some(layers) = o.layers {
            cmd.arg("--layers").arg(layers.to_string());
        }
        let status = cmd.status().expect("child");
        assert!(status.success(), "{} failed: {status}", name.get_name());
    };
    child(Mode::Write);
    child(Mode::Direct);
    if !o.skip_pool {
        child(Mode::Pool);
    }
    if !o.keep {
        std::fs::remove_dir_all(&dir).unwrap();
        println!("deleted {}", dir.display());
    }
}

/// The tensors of Phi-4 Q4_K_M as the estimator derives them from the model card.
fn tensors(layers: Option<u64>) -> (Vec<TensorDesc>, model_spec::Component) {
    let reg = model_serving::registry::specs().unwrap();
    let mut c = reg.get(KEY).unwrap().spec.spec.components[0].clone();
    if let Some(l) = layers {
        let fact = c.architecture.get_mut("num_hidden_layers").unwrap();
        *fact = toml::Spanned::new(
            0..0,
            model_spec::Fact {
                value: toml::Value::Integer(l as i64),
                ..fact.get_ref().clone()
            },
        );
    }
    (model_spec::shapes::derive(&c).unwrap(), c)
}

fn write(file: &Path, layers: Option<u64>) {
    let started = Instant::now();
    let (tensors, c) = tensors(layers);
    let u = |k: &str| c.arch_u64(k).unwrap();
    let mut vocab = support::Vocab::new();
    // llama.cpp requires one vocabulary entry per embedding row; the rows past the tiny
    // byte-level vocabulary are unused tokens no merge produces.
    let rows = u("vocab_size") as usize;
    for i in vocab.tokens.len()..rows {
        vocab.tokens.push(format!("<|unused_{i}|>"));
        vocab.types.push(5);
    }
    use model_runtime::gguf::ggml_dtype;
    // GGUF `phi3.*` integers and the spec architecture values they come from.
    let geometry = [
        ("context_length", "max_position_embeddings"),
        ("embedding_length", "hidden_size"),
        ("feed_forward_length", "intermediate_size"),
        ("block_count", "num_hidden_layers"),
        ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"),
        ("rope.dimension_count", "head_dim"),
    ];
    let mut md: Vec<(String, Meta)> = geometry
        .iter()
        .map(|(gguf, spec)| (format!("phi3.{gguf}"), Meta::U32(u(spec) as u32)))
        .collect();
    md.extend([
        ("general.architecture".into(), Meta::Str("phi3".into())),
        (
            "general.name".into(),
            Meta::Str("phi-4 geometry, random weights".into()),
        ),
        ("general.alignment".into(), Meta::U32(32)),
        (
            "phi3.attention.layer_norm_rms_epsilon".into(),
            Meta::F32(1e-5),
        ),
        (
            "phi3.rope.freq_base".into(),
            Meta::F32(c.arch_f64("rope_theta").unwrap() as f32),
        ),
        ("tokenizer.ggml.model".into(), Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Meta::Str("dbrx".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Meta::Strs(vocab.tokens.clone()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Meta::Strs(vocab.merges.clone()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Meta::I32s(vocab.types.clone()),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Meta::U32(vocab.id("<|im_end|>")),
        ),
    ]);
    md.sort_by(|a, b| a.0.cmp(&b.0));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut w = BufWriter::with_capacity(8 << 20, std::fs::File::create(file).unwrap());
    let w32 = |w: &mut BufWriter<std::fs::File>, v: u32| w.write_all(&v.to_le_bytes()).unwrap();
    let w64 = |w: &mut BufWriter<std::fs::File>, v: u64| w.write_all(&v.to_le_bytes()).unwrap();
    let ws = |w: &mut BufWriter<std::fs::File>, s: &str| {
        w.write_all(&(s.len() as u64).to_le_bytes()).unwrap();
        w.write_all(s.as_bytes()).unwrap();
    };
    w.write_all(b"GGUF").unwrap();
    w32(&mut w, 3);
    w64(&mut w, tensors.len() as u64);
    w64(&mut w, md.len() as u64);
    for (k, v) in &md {
        ws(&mut w, k);
        match v {
            Meta::U32(x) => {
                w32(&mut w, 4);
                w32(&mut w, *x)
            }
            Meta::F32(x) => {
                w32(&mut w, 6);
                w.write_all(&x.to_le_bytes()).unwrap()
            }
            Meta::Str(s) => {
                w32(&mut w, 8);
                ws(&mut w, s)
            }
            Meta::Strs(v) => {
                w32(&mut w, 9);
                w32(&mut w, 8);
                w64(&mut w, v.len() as u64);
                v.iter().for_each(|s| ws(&mut w, s));
            }
            Meta::I32s(v) => {
                w32(&mut w, 9);
                w32(&mut w, 5);
                w64(&mut w, v.len() as u64);
                v.iter()
                    .for_each(|x| w.write_all(&x.to_le_bytes()).unwrap());
            }
        }
    }
    let pad = |n: u64| n.div_ceil(32) * 32;
    let mut offset = 0u64;
    for t in &tensors {
        ws(&mut w, &t.name);
        w32(&mut w, t.shape.len() as u32);
        t.shape.iter().for_each(|d| w64(&mut w, *d));
        w32(&mut w, ggml_type_id(t.dtype));
        w64(&mut w, offset);
        offset += pad(t.bytes());
        assert!(ggml_dtype(t.dtype).is_some());
    }
    w.flush().unwrap();
    let pos = w.get_ref().metadata().unwrap().len();
    w.write_all(&vec![0u8; (pad(pos) - pos) as usize]).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut total = 0u64;
    for t in &tensors {
        let bytes = t.bytes() as usize;
        let mut buf = vec![0u8; bytes];
        model_measure::random_blocks(&mut buf, t.dtype, &mut rng);
        w.write_all(&buf).unwrap();
        w.write_all(&vec![0u8; (pad(bytes as u64) - bytes as u64) as usize])
            .unwrap();
        total += bytes as u64;
    }
    w.flush().unwrap();
    println!(
        "wrote {} tensors, {:.2} GB of weights ({:.2} GiB file) in {:.0} s: {}",
        tensors.len(),
        total as f64 / 1e9,
        std::fs::metadata(file).unwrap().len() as f64 / GIB,
        started.elapsed().as_secs_f64(),
        file.display()
    );
}

enum Meta {
    U32(u32),
    F32(f32),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

fn ggml_type_id(d: model_spec::DType) -> u32 {
    use model_spec::DType as D;
    match d {
        D::F32 => 0,
        D::F16 => 1,
        D::Q4_0 => 2,
        D::Q4_1 => 3,
        D::Q5_0 => 6,
        D::Q5_1 => 7,
        D::Q8_0 => 8,
        D::Q2K => 10,
        D::Q3K => 11,
        D::Q4K => 12,
        D::Q5K => 13,
        D::Q6K => 14,
        D::Q8K => 15,
        other => panic!("no ggml type for {other}"),
    }
}

fn config(file: &Path, o: &Opts) -> ServedModel {
    ServedModel::registry(KEY, file)
        .unwrap()
        .map_generate(|g| g.prefill_chunk(o.prompt))
        .unwrap()
}

fn mem_available() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(u64::MAX, |kb| kb * 1024)
}

fn direct(file: &Path, o: &Opts) {
    let registry = model_serving::registry::specs().unwrap();
    let spec = &registry.get(KEY).unwrap().spec.spec;
    let mut profile: RunProfile = spec.profile().unwrap().clone();
    let default_est = estimate_checkpoint(Backend::Phi3Gguf, file, Some(&profile)).unwrap();
    let context = o.context.max(o.prompt + o.new);
    profile.context_tokens = Some(context as u64);
    profile.prompt_tokens = Some(o.prompt as u64);
    let est = estimate_checkpoint(Backend::Phi3Gguf, file, Some(&profile)).unwrap();
    let expected = est.total_bytes - est.margin_bytes;
    // The bar of the GGUF-at-file-size work: GGUF bytes + KV cache + one prefill's working set.
    let file_kv_prefill = est.weights_bytes + est.kv_cache_bytes + est.activations_bytes;
    let available = mem_available();
    println!(
        "estimate for this run (context {}): {:.0} MB = weights {:.0} + kv {:.0} + activations {:.0} + overhead {:.0} + margin {:.0}",
        context,
        est.total_bytes as f64 / MB,
        est.weights_bytes as f64 / MB,
        est.kv_cache_bytes as f64 / MB,
        est.activations_bytes as f64 / MB,
        est.overhead_bytes as f64 / MB,
        est.margin_bytes as f64 / MB
    );
    println!(
        "default profile (context 4096): {} MB (total {:.0} MB)",
        default_est.est_memory_allocation_mb,
        default_est.total_bytes as f64 / MB
    );
    println!(
        "expected peak ≈ {:.0} MB (no margin), available {:.0} MB",
        expected as f64 / MB,
        available as f64 / MB
    );
    if expected + (1 << 30) > available {
        eprintln!("not enough memory available for this run; stopping before the load");
        std::process::exit(2);
    }
    let (_model, run) =
        measure_profile(&config(file, o), o.prompt, o.new, Some(context), None).unwrap();
    let mb = |b: u64| b as f64 / MB;
    println!(
        "direct: loaded {:.0} MB ({} ms), after warm-up {:.0} MB ({} ms), request +{:.0} MB (KV {:.0} MB), peak {:.0} MB; prefill {} tokens {:.1} s, decode {:.3} tok/s",
        mb(run.load.loaded_bytes),
        run.load.load_millis,
        mb(run.load.resident_bytes),
        run.load.warmup_millis,
        mb(run.request_peak_bytes),
        mb(run.kv_bytes.unwrap_or(0)),
        mb(run.peak_bytes),
        run.prompt_tokens,
        run.prefill.as_secs_f64(),
        run.decode_tokens_per_second()
    );
    println!(
        "direct: estimate/peak = {:.3} (estimate {:.0} MB incl. margin, peak {:.0} MB)",
        est.total_bytes as f64 / run.peak_bytes as f64,
        mb(est.total_bytes),
        mb(run.peak_bytes)
    );
    println!(
        "direct: peak / (GGUF bytes + KV + one prefill) = {:.3} ({:.0} MB / ({:.0} + {:.0} + {:.0} MB))",
        run.peak_bytes as f64 / file_kv_prefill as f64,
        mb(run.peak_bytes),
        mb(est.weights_bytes),
        mb(est.kv_cache_bytes),
        mb(est.activations_bytes)
    );
}

/// A two-worker runtime, as the server uses on this machine.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A pool of `served` with the whole machine less 512 MiB: the estimate (with its margin) is
/// what the pool reserves, and on a 24 GiB machine it is close to the RAM itself.
fn machine_pool(served: ServedModel) -> ModelPool {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let budget = sys.total_memory().saturating_sub(512 << 20);
    let governor = MemoryGovernor::with_budgets([(DeviceId::Cpu, budget)]).unwrap();
    ModelPool::builder()
        .governor(governor)
        .model(served)
        .build()
        .unwrap()
}

fn pool(file: &Path, o: &Opts) {
    runtime().block_on(async {
        let pool = machine_pool(config(file, o));
        // Letters that never merge: one token each, so the prompt has exactly this length.
        let prompt = "qz".repeat(o.tput_prompt / 2);
        let through_pool = || async {
            let g = pool
                .generate(KEY, GenerateRequest::raw(prompt.clone()).greedy().max_tokens(o.new))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            g.usage
        };
        let started = Instant::now();
        let first = through_pool().await;
        println!(
            "pool: first request (load included) {:.1} s; {} prompt tokens, {} new",
            started.elapsed().as_secs_f64(),
            first.prompt_tokens,
            first.completion_tokens
        );
        // The same request on the same loaded weights, through a lease and a bare session
        // (no stream, no sampler, no detokenizer), then through the pool again.
        let lease = CapabilityLease::new(pool.pool().acquire(KEY).await.unwrap(), LoadedModel::as_generator)
            .unwrap_or_else(|_| panic!("{KEY} is a generator"));
        let (n, new) = (first.prompt_tokens, o.new);
        let direct = tokio::task::spawn_blocking(move || {
            let tokens = lease.encode(&"qz".repeat(n / 2)).unwrap();
            let mut s = lease.session(tokens.len() + new).unwrap();
            let t0 = Instant::now();
            let mut logits = s.prefill(&tokens, None, 512).unwrap();
            let prefill = t0.elapsed();
            let t1 = Instant::now();
            let mut next = argmax(&logits);
            for _ in 1..new {
                logits = s.step(next).unwrap();
                next = argmax(&logits);
            }
            (prefill, (new - 1) as f64 / t1.elapsed().as_secs_f64())
        })
        .await
        .unwrap();
        let second = through_pool().await;
        let status = pool.status();
        let s = status.model(KEY).unwrap();
        println!(
            "decode tok/s on the loaded model: pool {:.3} (prefill {:.1} s), direct session {:.3} (prefill {:.1} s), pool again {:.3} (prefill {:.1} s)",
            first.decode_tokens_per_second(),
            first.prefill.as_secs_f64(),
            direct.1,
            direct.0.as_secs_f64(),
            second.decode_tokens_per_second(),
            second.prefill.as_secs_f64()
        );
        println!(
            "pool: measured resident {:.0} MB vs declared {:.0} MB (estimate exceeded: {})",
            s.measured_bytes.unwrap_or(0) as f64 / MB,
            s.resident_bytes as f64 / MB,
            s.estimate_exceeded
        );
        pool.shutdown().await;
    });
}

/// One request, then `o.streams` at once, through the pool: decode tokens per second, each
/// counted from the moment every request of the run has its first token to the moment the
/// first one ends (so that no request's prefill or absence is counted).
fn streams(file: &Path, o: &Opts) {
    runtime().block_on(async {
        let served = config(file, o)
            .max_concurrency(o.streams.max(1))
            .map_generate(|g| g.context_tokens(o.context))
            .unwrap();
        let pool = std::sync::Arc::new(machine_pool(served));
        // Different prompts of the same length (letters that never merge: one token each).
        let run = |n: usize| {
            let pool = std::sync::Arc::clone(&pool);
            async move {
                let tasks: Vec<_> = (0..n)
                    .map(|i| {
                        let pool = std::sync::Arc::clone(&pool);
                        let letters = ["qz", "zq", "xq", "qx", "zx", "xz", "jq", "qj"][i % 8];
                        let prompt = letters.repeat(o.tput_prompt / 2);
                        let new = o.new;
                        tokio::spawn(async move {
                            let request = GenerateRequest::raw(prompt).greedy().max_tokens(new);
                            let mut stream = pool.generate(KEY, request).await.unwrap();
                            let mut at = Vec::new();
                            while let Some(t) = stream.next_token().await {
                                t.unwrap();
                                at.push(Instant::now());
                            }
                            at
                        })
                    })
                    .collect();
                let mut arrivals = Vec::new();
                for t in tasks {
                    arrivals.push(t.await.unwrap());
                }
                let from = arrivals.iter().map(|a| a[0]).max().unwrap();
                let to = arrivals.iter().map(|a| *a.last().unwrap()).min().unwrap();
                let tokens = arrivals
                    .iter()
                    .flatten()
                    .filter(|t| **t > from && **t <= to)
                    .count();
                let rate = tokens as f64 / (to - from).as_secs_f64();
                (rate, tokens)
            }
        };
        let started = Instant::now();
        let (warm, _) = run(1).await;
        println!(
            "streams: first request (load included) {:.1} s, decode {warm:.3} tok/s",
            started.elapsed().as_secs_f64()
        );
        let batch_stats = || async {
            let lease = CapabilityLease::new(
                pool.pool().acquire(KEY).await.unwrap(),
                LoadedModel::as_generator,
            )
            .unwrap_or_else(|_| panic!("{KEY} is a generator"));
            lease.batch_stats()
        };
        let mut ones = vec![run(1).await];
        let mut manys = Vec::new();
        let before = batch_stats().await;
        for _ in 0..o.rounds.max(1) {
            manys.push(run(o.streams).await);
            ones.push(run(1).await);
        }
        let after = batch_stats().await;
        println!(
            "streams: {} sequence-steps in {} forward passes while runs of 1 and {} ran (largest batch {})",
            after.rows - before.rows,
            after.steps - before.steps,
            o.streams,
            after.largest
        );
        let mut ratios = Vec::new();
        for (i, (many, many_tokens)) in manys.iter().enumerate() {
            let one = (ones[i].0 + ones[i + 1].0) / 2.0;
            ratios.push(many / one);
            println!(
                "streams: round {}: {} prompt tokens, {} new each; one request {:.3} tok/s before, {:.3} after; {} at once {many:.3} tok/s in all ({many_tokens} counted) = {:.2}x one",
                i + 1,
                o.tput_prompt,
                o.new,
                ones[i].0,
                ones[i + 1].0,
                o.streams,
                many / one
            );
        }
        ratios.sort_by(f64::total_cmp);
        let n = ratios.len();
        let median = (ratios[(n - 1) / 2] + ratios[n / 2]) / 2.0;
        println!(
            "streams: median of {n} rounds: {median:.2}x (lowest {:.2}x, highest {:.2}x)",
            ratios[0],
            ratios[n - 1]
        );
        pool.shutdown().await;
    });
}
