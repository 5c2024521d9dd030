//! The HTTP server against the in-process pool it serves, side by side in one run, rounds
//! interleaved (in-process, HTTP, HTTP, in-process, …) so that other load on the machine hits
//! both sides alike:
//!
//! * `/v1/embeddings` on all-MiniLM-L6-v2, one short text per request, `--concurrency`
//!   connections (64) against as many tasks calling `ModelPool::embed`: requests per second and
//!   median latency, and their ratios; and the median latency one request at a time, what
//!   HTTP adds to a request that does not queue;
//! * time to first token and decode tokens/s of a streamed `/v1/chat/completions` against
//!   `ModelPool::generate` on the same Phi-3 GGUF (a random-weight checkpoint written here),
//!   one request at a time, greedy, the same prompt; both sides time the tokens that carry
//!   text (a stream sends no chunk for a token whose text is held back).
//!
//! The client runs in the same process, on loopback. Prints one JSON line per round and side,
//! then the medians and ratios.
//!
//! ```sh
//! tools/fetch-minilm.sh
//! cargo run --release -p model-measure --bin serve-bench -- --model-dir .cache/all-MiniLM-L6-v2
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use futures_util::StreamExt;
use model_fixtures::decode::{Geometry, write_phi3};
use model_pool::{DeviceId, MemoryGovernor, Tier};
use model_registry::Backend;
use model_server::{Server, ServerOptions};
use model_serving::{GenerateRequest, ModelPool, ServedModel};
use serde_json::{Value, json};

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
const GENERATOR: &str = "bench/phi3";
const TEXT: &str = "the quick brown fox jumps over the lazy dog";
const PROMPT: &str = "Write a long story about a lighthouse keeper.";
const SIDES: [&str; 2] = ["in-process", "http"];

#[derive(Parser)]
struct Args {
    /// The all-MiniLM-L6-v2 checkpoint.
    #[arg(long, default_value = ".cache/all-MiniLM-L6-v2")]
    model_dir: PathBuf,
    /// Concurrent connections (and in-process tasks) for embeddings.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Embedding requests per round and side.
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    /// Rounds (each runs both sides, in alternating order).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Generations per round and side.
    #[arg(long, default_value_t = 3)]
    generations: usize,
    /// New tokens per generation.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Skip the generation part.
    #[arg(long)]
    no_generate: bool,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Requests per second and each request's latency (seconds).
struct EmbedRun {
    per_second: f64,
    latencies: Vec<f64>,
}

/// Runs `n` requests from `concurrency` tasks, each `one` request after the other.
async fn drive<F, Fut>(n: usize, concurrency: usize, one: F) -> EmbedRun
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, one) = (Arc::clone(&next), one.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                    let t = Instant::now();
                    one().await;
                    lat.push(t.elapsed().as_secs_f64());
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    EmbedRun {
        per_second: n as f64 / start.elapsed().as_secs_f64(),
        latencies,
    }
}

async fn embed_inprocess(pool: &Arc<ModelPool>, n: usize, concurrency: usize) -> EmbedRun {
    let pool = Arc::clone(pool);
    drive(n, concurrency, move || {
        let pool = Arc::clone(&pool);
        async move {
            let v = pool.embed(MINILM, [TEXT]).await.unwrap();
            assert_eq!(v[0].len(), 384);
        }
    })
    .await
}

async fn embed_http(http: &reqwest::Client, url: &str, n: usize, concurrency: usize) -> EmbedRun {
    let body = serde_json::to_vec(&json!({"model": MINILM, "input": TEXT})).unwrap();
    let (http, url) = (http.clone(), url.to_owned());
    drive(n, concurrency, move || {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        async move {
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.bytes().await.unwrap().len() > 384);
        }
    })
    .await
}

/// Time to first token (s) and decode tokens/s after it.
struct GenRun {
    ttft: f64,
    tokens_per_second: f64,
    tokens: usize,
}

fn request(max_tokens: usize) -> GenerateRequest {
    GenerateRequest::user(PROMPT)
        .greedy()
        .max_tokens(max_tokens)
}

async fn generate_inprocess(pool: &ModelPool, max_tokens: usize) -> GenRun {
    let start = Instant::now();
    let mut stream = pool.generate(GENERATOR, request(max_tokens)).await.unwrap();
    let mut text = Texts::new(start);
    while let Some(t) = stream.next_token().await {
        if !t.unwrap().text.is_empty() {
            text.arrived();
        }
    }
    text.run(stream.usage().unwrap().completion_tokens)
}

async fn generate_http(http: &reqwest::Client, base: &str, max_tokens: usize) -> GenRun {
    let body = json!({"model": GENERATOR, "messages": [{"role": "user", "content": PROMPT}],
                      "max_tokens": max_tokens, "temperature": 0, "stream": true,
                      "stream_options": {"include_usage": true}});
    let start = Instant::now();
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut events = r.bytes_stream();
    let (mut text, mut tokens, mut buf) = (Texts::new(start), 0, Vec::new());
    while let Some(chunk) = events.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let Some(data) = std::str::from_utf8(&event)
                .unwrap()
                .trim()
                .strip_prefix("data: ")
            else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = n as usize;
            } else if v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
            {
                text.arrived();
            }
        }
    }
    text.run(tokens)
}

/// When text arrived: a token whose text is empty (held back, or part of a character) has no
/// chunk of its own in a stream, so both sides time the first and last tokens that carry
/// text, and divide the tokens generated by the time between them.
struct Texts {
    start: Instant,
    first: Option<Instant>,
    last: Instant,
}

impl Texts {
    fn new(start: Instant) -> Self {
        Texts {
            start,
            first: None,
            last: start,
        }
    }

    fn arrived(&mut self) {
        self.last = Instant::now();
        self.first.get_or_insert(self.last);
    }

    fn run(&self, tokens: usize) -> GenRun {
        let first = self.first.expect("the answer has text");
        GenRun {
            ttft: (first - self.start).as_secs_f64(),
            tokens_per_second: tokens.saturating_sub(1) as f64 / (self.last - first).as_secs_f64(),
            tokens,
        }
    }
}

fn generator() -> ServedModel {
    let path = std::env::temp_dir()
        .join(format!("serve-bench-{}", std::process::id()))
        .join("phi3.gguf");
    let g = Geometry {
        hidden: 1024,
        layers: 8,
        heads: 8,
        kv_heads: 4,
        head_dim: 128,
        ffn: 2816,
        context: 2048,
        ..Geometry::phi3()
    };
    write_phi3(&path, &g, 5);
    ServedModel::with_backend(GENERATOR, path, Backend::Phi3Gguf)
        .unwrap()
        .tier(Tier::Hot { pinned: true })
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut models = vec![ServedModel::registry(MINILM, &args.model_dir)
            .unwrap()
            .tier(Tier::Hot { pinned: true })];
        if !args.no_generate {
            models.push(generator());
        }
        let pool = Arc::new(
            ModelPool::builder()
                .governor(MemoryGovernor::with_budgets([(DeviceId::Cpu, 8 << 30)]).unwrap())
                .models(models)
                .build()
                .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = Server::new(Arc::clone(&pool), ServerOptions::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            server.serve(listener, async { let _ = stopped.await; }).await
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(args.concurrency)
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let url = format!("{base}/v1/embeddings");
        // Warm-up: loads, first batches, connections.
        embed_inprocess(&pool, 256, args.concurrency).await;
        embed_http(&http, &url, 256, args.concurrency).await;
        if !args.no_generate {
            generate_inprocess(&pool, 8).await;
            generate_http(&http, &base, 8).await;
        }

        // One request at a time: what HTTP adds to a request that does not queue.
        let mut alone = [Vec::new(), Vec::new()];
        for i in 0..args.requests / 10 {
            for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
                let run = match side {
                    0 => embed_inprocess(&pool, 1, 1).await,
                    _ => embed_http(&http, &url, 1, 1).await,
                };
                alone[side].extend(run.latencies);
            }
        }
        let (a0, a1) = (median(&mut alone[0]), median(&mut alone[1]));

        let (mut rps, mut lat) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        let (mut ttft, mut tps) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for round in 0..args.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let run = match side {
                    0 => embed_inprocess(&pool, args.requests, args.concurrency).await,
                    _ => embed_http(&http, &url, args.requests, args.concurrency).await,
                };
                let mut l = run.latencies.clone();
                let m = median(&mut l);
                println!(
                    "{}",
                    json!({"round": round, "side": SIDES[side], "bench": "embeddings",
                           "requests_per_s": run.per_second, "median_latency_ms": m * 1e3})
                );
                rps[side].push(run.per_second);
                lat[side].push(m);
            }
            if args.no_generate {
                continue;
            }
            for g in 0..args.generations {
                for side in if g % 2 == 0 { order } else { [order[1], order[0]] } {
                    let run = match side {
                        0 => generate_inprocess(&pool, args.max_tokens).await,
                        _ => generate_http(&http, &base, args.max_tokens).await,
                    };
                    println!(
                        "{}",
                        json!({"round": round, "side": SIDES[side], "bench": "generate",
                               "ttft_ms": run.ttft * 1e3, "tokens_per_s": run.tokens_per_second, "tokens": run.tokens})
                    );
                    ttft[side].push(run.ttft);
                    tps[side].push(run.tokens_per_second);
                }
            }
        }
        let (r0, r1) = (median(&mut rps[0]), median(&mut rps[1]));
        let (l0, l1) = (median(&mut lat[0]), median(&mut lat[1]));
        let mut summary = json!({
            "concurrency": args.concurrency,
            "embeddings": {
                "in_process_requests_per_s": r0, "http_requests_per_s": r1, "throughput_ratio": r1 / r0,
                "in_process_median_ms": l0 * 1e3, "http_median_ms": l1 * 1e3, "added_median_ms": (l1 - l0) * 1e3,
                "one_at_a_time": {
                    "in_process_median_ms": a0 * 1e3, "http_median_ms": a1 * 1e3, "added_median_ms": (a1 - a0) * 1e3,
                },
            },
        });
        if !args.no_generate {
            let (t0, t1) = (median(&mut ttft[0]), median(&mut ttft[1]));
            let (s0, s1) = (median(&mut tps[0]), median(&mut tps[1]));
            summary["generate"] = json!({
                "in_process_ttft_ms": t0 * 1e3, "http_ttft_ms": t1 * 1e3, "ttft_ratio": t1 / t0,
                "in_process_tokens_per_s": s0, "http_tokens_per_s": s1, "tokens_per_s_ratio": s1 / s0,
            });
        }
        println!("{summary}");
        let _ = stop.send(());
        serving.await.unwrap().unwrap();
    });
}
