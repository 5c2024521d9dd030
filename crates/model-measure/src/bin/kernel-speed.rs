//! GFLOP/s of the matmul shapes of a MiniLM-sized encoder, and the time of a whole forward pass
//! with random weights, for profiling the kernels without a checkpoint.
//!
//! ```sh
//! cargo run --release -p model-measure --bin kernel-speed -- [TOKENS_PER_ROW] [ROWS]
//! ```

use std::time::Instant;

use encoder_kernels::bert::{Embeddings, Encoder, Layer, LayerNorm, Positions};
use encoder_kernels::{Activation, Linear};

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
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let len = args.first().copied().unwrap_or(165);
    let rows = args.get(1).copied().unwrap_or(32);
    let (h, inter, heads, layers) = (384, 1536, 12, 6);
    let t = len * rows;
    for (name, o, i) in [
        ("qkv", 3 * h, h),
        ("attn_out", h, h),
        ("up", inter, h),
        ("down", h, inter),
    ] {
        let lin = linear(o, i, 7);
        let x = random(t * i, 3);
        let mut y = vec![0f32; t * o];
        lin.matmul(&x, t, &mut y);
        let reps = 10;
        let start = Instant::now();
        for _ in 0..reps {
            lin.matmul(&x, t, &mut y);
        }
        let s = start.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{name:>9} [{t} x {i}] x [{i} x {o}]: {:.2} ms, {:.1} GFLOP/s",
            s * 1e3,
            2.0 * (t * i * o) as f64 / s / 1e9
        );
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
