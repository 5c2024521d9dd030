//! GFLOP/s of the matmul shapes of a MiniLM-sized encoder (or of shapes given with
//! `--matmul`), and the time of a whole forward pass with random weights, for profiling the
//! kernels without a checkpoint.
//!
//! ```sh
//! cargo run --release -p model-measure --bin kernel-speed -- --tokens 165 --rows 32
//! # GTE-Qwen2-1.5B's gate/up and down projections at 32 texts of 32 tokens, matmuls only:
//! cargo run --release -p model-measure --bin kernel-speed -- --matmul 1024x1536x17920 \
//!     --matmul 1024x8960x1536
//! ```

use std::time::Instant;

use clap::Parser;

use encoder_kernels::bert::{Embeddings, Encoder, Layer, LayerNorm, Positions};
use encoder_kernels::{Activation, Linear};

#[derive(Parser)]
#[command(about = "GFLOP/s of the encoder kernels' matmuls and a MiniLM-sized forward pass")]
struct Args {
    /// Tokens per text row of the forward pass and of the MiniLM-sized matmuls.
    #[arg(long, default_value_t = 165)]
    tokens: usize,
    /// Text rows per forward pass.
    #[arg(long, default_value_t = 32)]
    rows: usize,
    /// Time `ROWSxINPUTSxOUTPUTS` matmuls instead (repeatable); skips the forward pass.
    #[arg(long, value_parser = parse_shape)]
    matmul: Vec<(usize, usize, usize)>,
    /// Timed repetitions of each matmul; the best and the median are printed.
    #[arg(long, default_value_t = 10)]
    reps: usize,
}

fn parse_shape(s: &str) -> Result<(usize, usize, usize), String> {
    let parts: Vec<&str> = s.split('x').collect();
    let dims: Vec<usize> = parts
        .iter()
        .filter_map(|p| p.parse().ok().filter(|&n| n > 0))
        .collect();
    match dims[..] {
        [rows, inputs, outputs] if parts.len() == 3 => Ok((rows, inputs, outputs)),
        _ => Err(format!(
            "`{s}` is not ROWSxINPUTSxOUTPUTS with three positive whole numbers, e.g. 1024x1536x17920"
        )),
    }
}

/// Times `reps` runs of `x[rows, inputs] · W[inputs, outputs]` and prints the best and the
/// median.
fn time_matmul(name: &str, (rows, inputs, outputs): (usize, usize, usize), reps: usize) {
    let lin = linear(outputs, inputs, 7);
    let mut x = encoder_kernels::buffer::zeros(rows * inputs);
    x.copy_from_slice(&random(rows * inputs, 3));
    let mut y = encoder_kernels::buffer::zeros(rows * outputs);
    lin.matmul(&x, rows, &mut y);
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let start = Instant::now();
            lin.matmul(&x, rows, &mut y);
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let (best, median) = (times[0], times[times.len() / 2]);
    let flop = 2.0 * (rows * inputs * outputs) as f64;
    println!(
        "{name:>9} [{rows} x {inputs}] x [{inputs} x {outputs}]: best {:.2} ms ({:.1} GFLOP/s), \
         median {:.2} ms ({:.1} GFLOP/s)",
        best * 1e3,
        flop / best / 1e9,
        median * 1e3,
        flop / median / 1e9
    );
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn linear(outputs: usize, inputs: usize, seed: u64) -> Linear {
    Linear::new(
        &random(outputs * inputs, seed),
        Some(&random(outputs, seed + 1)),
        outputs,
        inputs,
    )
}

fn norm(h: usize) -> LayerNorm {
    LayerNorm {
        gamma: vec![1.0; h],
        beta: vec![0.0; h],
        eps: 1e-12,
    }
}

/// CPU time of the process (all threads), seconds: less disturbed than wall time by other
/// work on a shared machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    f.get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}

fn main() {
    let args = Args::parse();
    if !args.matmul.is_empty() {
        for &shape in &args.matmul {
            time_matmul("matmul", shape, args.reps);
        }
        return;
    }
    let (len, rows) = (args.tokens, args.rows);
    if len == 0 || rows == 0 {
        use clap::CommandFactory;
        Args::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                "--tokens and --rows must be at least 1",
            )
            .exit();
    }
    let (h, inter, heads, layers) = (384, 1536, 12, 6);
    let t = len * rows;
    for (name, o, i) in [
        ("qkv", 3 * h, h),
        ("attn_out", h, h),
        ("up", inter, h),
        ("down", h, inter),
    ] {
        time_matmul(name, (t, i, o), args.reps);
    }
    let enc = Encoder {
        hidden: h,
        heads,
        activation: Activation::GeluErf,
        embeddings: Embeddings {
            words: random(30522 * h, 1),
            positions: Positions::Learned(random(512 * h, 2)),
            token_type: random(h, 3),
            norm: norm(h),
        },
        layers: (0..layers)
            .map(|l| Layer {
                qkv: linear(3 * h, h, 10 + l),
                attn_out: linear(h, h, 20 + l),
                attn_norm: norm(h),
                up: linear(inter, h, 30 + l),
                gated: false,
                down: linear(h, inter, 40 + l),
                ffn_norm: norm(h),
            })
            .collect(),
    };
    let ids: Vec<Vec<u32>> = (0..rows)
        .map(|r| {
            (0..len)
                .map(|i| ((r * 31 + i * 7) % 30000) as u32)
                .collect()
        })
        .collect();
    let refs: Vec<&[u32]> = ids.iter().map(|r| r.as_slice()).collect();
    enc.forward(&refs);
    let reps = (2000 / t).clamp(5, 200);
    let (start, cpu) = (Instant::now(), cpu_seconds());
    for _ in 0..reps {
        std::hint::black_box(enc.forward(&refs));
    }
    let s = start.elapsed().as_secs_f64() / reps as f64;
    let c = (cpu_seconds() - cpu) / reps as f64;
    println!("forward CPU time {:.2} ms", c * 1e3);
    println!(
        "forward {rows} rows x {len} tokens: {:.2} ms, {:.1} sentences/s",
        s * 1e3,
        rows as f64 / s
    );
}
