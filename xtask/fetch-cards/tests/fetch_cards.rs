//! `cargo xtask fetch-cards` against a local fixture hub: inventories from real-shaped headers,
//! bytes transferred, every error of the command, interruption, offline runs and `--check`.

mod support;

use fetch_cards::{
    ComponentReport, FetchError, FetchOptions, HubError, HubOptions, Log, ModelReport, Outcome,
    RunReport, run,
};
use fixture_hub::{Body, Fault, FixtureHub, FixtureRepo};
use model_spec::shapes::inventory;
use model_spec::spec::Component;
use model_spec::{Family, load_spec};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::fixtures::*;

struct Setup {
    _tmp: tempfile::TempDir,
    cards: PathBuf,
    cache: PathBuf,
}

fn setup(entries: &[String]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let cards = tmp.path().join("model-cards");
    write_cards(&cards, entries);
    let cache = tmp.path().join("hf-cache");
    Setup {
        _tmp: tmp,
        cards,
        cache,
    }
}

fn opts(hub: &FixtureHub, s: &Setup) -> FetchOptions {
    FetchOptions {
        cards: s.cards.clone(),
        out: None,
        models: Vec::new(),
        revision: None,
        check: false,
        hub: HubOptions {
            endpoint: Some(hub.url.clone()),
            cache_dir: Some(s.cache.clone()),
            token: None,
            offline: Some(false),
            retries: 2,
            retry_base_delay: Duration::from_millis(5),
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(3),
        },
    }
}

fn fetch(o: &FetchOptions) -> (RunReport, String) {
    let (mut log, buf) = Log::captured();
    let r = run(o, &mut log).expect("run starts");
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    (r, text)
}

fn ok(o: &FetchOptions) -> (RunReport, String) {
    let (r, text) = fetch(o);
    assert!(r.failures.is_empty(), "failures: {:?}\n{text}", r.failures);
    (r, text)
}

fn only_error(o: &FetchOptions) -> (FetchError, String) {
    let (mut r, text) = fetch(o);
    assert_eq!(r.failures.len(), 1, "expected one failure:\n{text}");
    (r.failures.remove(0).error, text)
}

/// A text embedding entry with all-MiniLM-L6-v2's run profile.
fn minilm_profile_entry(key: &str, spec: &str, format: &str, files: &[&str]) -> String {
    let profile_of = "sentence-transformers/all-MiniLM-L6-v2";
    entry_toml(key, "text_embedding", spec, format, files, profile_of)
}

fn minilm_entry() -> String {
    minilm_profile_entry(
        "sentence-transformers/all-MiniLM-L6-v2",
        "text_embedding/all-minilm-l6-v2.toml",
        "safetensors",
        &["model.safetensors"],
    )
}

/// The entry for [`sharded_qwen2`], found through the shard index.
fn sharded_qwen2_entry() -> String {
    entry_toml(
        "fixture/gte-qwen2-sharded",
        "text_embedding",
        "text_embedding/gte-qwen2-sharded.toml",
        "safetensors",
        &["model.safetensors.index.json"],
        "Alibaba-NLP/gte-Qwen2-1.5B-instruct",
    )
}

/// The entry for [`diffusers_sd3`], found through `model_index.json`.
fn diffusers_sd3_entry() -> String {
    entry_toml(
        "fixture/sd3-diffusers",
        "text_to_image",
        "text_to_image/sd3-diffusers.toml",
        "safetensors",
        &["model_index.json"],
        "stabilityai/stable-diffusion-3.5-large-turbo",
    )
}

/// The entry for [`dense_head`], found through `modules.json`.
fn dense_head_entry() -> String {
    entry_toml(
        "fixture/stella-dense",
        "text_embedding",
        "text_embedding/stella-dense.toml",
        "safetensors",
        &["modules.json"],
        "dunzhang/stella_en_1.5B_v5",
    )
}

/// The entry for [`gguf_multipart`], its parts named by a pattern.
fn gguf_multipart_entry() -> String {
    entry_toml(
        "fixture/phi-4-gguf-split",
        "text_to_text",
        "text_to_text/phi-4-split.toml",
        "gguf",
        &["phi-4-Q4_K_M-*-of-00003.gguf"],
        "microsoft/phi-4",
    )
}

/// Fetches `entry` from a hub serving `repo` alone: the setup holding what was written, and
/// the model's report.
fn fetch_one(repo: FixtureRepo, entry: String) -> (Setup, ModelReport) {
    let hub = FixtureHub::start(vec![repo]);
    let s = setup(&[entry]);
    let (mut r, _) = ok(&opts(&hub, &s));
    (s, r.models.remove(0))
}

/// `got`'s inventory is the one `want`, a checked-in spec's component, records.
fn assert_inventory(got: &ComponentReport, want: &Component) {
    assert_eq!(
        rows(&got.inventory),
        rows(&want.weights.inventory),
        "{} vs {}",
        got.name,
        want.name
    );
}

/// Headers are a vanishing fraction of the weights (the acceptance floor is 0.01 %).
fn assert_headers_only(m: &ModelReport) {
    assert!(
        m.header_percent() < 0.01,
        "{}: {} B of headers for {} B of weights = {:.5} %",
        m.key,
        m.transfer.range_bytes,
        m.weight_bytes,
        m.header_percent()
    );
}

fn no_temp_files(dir: &Path) {
    for e in walk(dir) {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp"),
            "temp file left behind: {}",
            e.display()
        );
    }
}

#[test]
fn minilm_reproduces_the_real_header_inventory() {
    let repo = minilm();
    let header_len = repo.files["model.safetensors"].prefix().len() as u64;
    let hub = FixtureHub::start(vec![repo]);
    let s = setup(&[minilm_entry()]);
    let (r, log) = ok(&opts(&hub, &s));
    let m = &r.models[0];
    assert_eq!(m.outcome, Outcome::Written);
    assert_eq!(m.sha, hub.sha("sentence-transformers/all-MiniLM-L6-v2"));
    assert_eq!(m.components.len(), 1);
    assert_eq!(m.components[0].family, Family::Bert);
    assert_eq!(
        rows(&m.components[0].inventory),
        vec![
            ("F32".into(), 103, 22_713_216, 90_852_864, None),
            ("I64".into(), 1, 512, 4_096, None),
        ]
    );
    // Exactly the length prefix and the header: two reads, nothing of the tensor data.
    assert_eq!(m.transfer.range_bytes, header_len);
    assert_eq!(m.transfer.range_requests, 2);
    assert!(
        log.contains(&format!("transferred {header_len} B of headers")),
        "{log}"
    );

    let spec = load_spec(&m.spec_path).unwrap().spec;
    assert_eq!(spec.revision.value.as_str(), Some(m.sha.as_str()));
    assert_eq!(spec.license.as_deref(), Some("apache-2.0"));
    let c = &spec.components[0];
    assert_eq!(c.arch_u64("hidden_size"), Some(384));
    assert_eq!(c.arch_bool("stores_position_ids"), Some(true));
    let f = c.architecture["num_hidden_layers"].get_ref();
    assert_eq!(f.provenance, model_spec::Provenance::Fetched);
    assert_eq!(f.source.as_deref(), Some("config.json num_hidden_layers"));
    assert_eq!(spec.serving_u64("max_input_tokens"), Some(256));
    assert_eq!(spec.serving_u64("embedding_dim"), Some(384));
    assert_eq!(spec.serving_u64("tokenizer_json_bytes"), Some(466_247));
    assert_eq!(
        c.weights
            .published_bytes
            .as_ref()
            .unwrap()
            .value
            .as_integer(),
        Some(90_868_376)
    );
    // gen-memory-specs accepts the fetched spec as it is (fetch-cards already wrote [memory]).
    let (files, models) = model_spec::specgen::generate(&s.cards).unwrap();
    assert_eq!(
        models[0].estimate.est_memory_allocation_mb,
        m.est_memory_allocation_mb
    );
    let stale = model_spec::specgen::stale_files(&files);
    assert!(
        !stale.contains(&m.spec_path),
        "fetched spec is not gen-memory-specs output"
    );
    assert!(
        !stale.contains(&m.card_path),
        "gen-memory-specs renders the fetched card again byte for byte, Hub overview included"
    );
    // The same numbers as the checked-in spec, which was recorded from the same file.
    let recorded = checked_in_spec("text_embedding/all-minilm-l6-v2.toml");
    assert_eq!(
        rows(&recorded.components[0].weights.inventory),
        rows(&c.weights.inventory)
    );

    let card = std::fs::read_to_string(&m.card_path).unwrap();
    assert!(m.card_path.ends_with("text_embedding/ALL-MINILM-L6-V2.md"));
    assert!(card.starts_with("<!-- generated by `cargo xtask fetch-cards`"));
    assert!(card.contains(&m.sha));
    assert!(card.contains("| License | apache-2.0 |"), "{card}");
    assert!(
        card.contains("maps sentences & paragraphs to a 384 dimensional"),
        "overview from the README"
    );
    assert!(card.contains("<https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/tree/"));
    assert!(card.contains("| model | F32 | 103 | 22,713,216 | 90,852,864 |"));
    assert!(card.contains(&format!("**{}**", m.est_memory_allocation_mb)));
    for section in [
        "## Overview",
        "## Architecture",
        "## Memory Requirements",
        "## Performance",
        "## Usage Notes",
        "## Links",
    ] {
        assert!(
            card.contains(&format!("\n{section}\n")),
            "{section}:\n{card}"
        );
    }
    no_temp_files(&s.cards);
}

#[test]
fn sharded_safetensors_follow_the_index() {
    let (_s, m) = fetch_one(sharded_qwen2(), sharded_qwen2_entry());
    assert_eq!(
        m.components[0].files,
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]
    );
    let want = checked_in_spec("text_embedding/gte-qwen2-1-5b-instruct.toml");
    assert_inventory(&m.components[0], &want.components[0]);
    assert!(m.weight_bytes > 6_000_000_000);
    assert_headers_only(&m);
    assert_eq!(
        m.transfer.range_requests, 4,
        "length prefix + rest, per shard"
    );
}

#[test]
fn diffusers_components_from_model_index() {
    let (_s, m) = fetch_one(diffusers_sd3(), diffusers_sd3_entry());
    let want = checked_in_spec("text_to_image/stable-diffusion-3-5-large-turbo.toml");
    let names: Vec<&str> = m.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "text_encoder",
            "text_encoder_2",
            "text_encoder_3",
            "transformer",
            "vae"
        ]
    );
    for (ours, theirs) in [
        ("text_encoder", "clip_l"),
        ("text_encoder_2", "clip_g"),
        ("text_encoder_3", "t5_xxl"),
        ("transformer", "transformer"),
        ("vae", "vae"),
    ] {
        let got = m.components.iter().find(|c| c.name == ours).unwrap();
        let exp = component(&want, theirs);
        assert_eq!(got.family, exp.family, "{ours}");
        assert_inventory(got, exp);
    }
    let t5 = m
        .components
        .iter()
        .find(|c| c.name == "text_encoder_3")
        .unwrap();
    assert_eq!(t5.files.len(), 2);
    assert_headers_only(&m);
    let spec = load_spec(&m.spec_path).unwrap().spec;
    assert_eq!(
        spec.license.as_deref(),
        Some("other (stabilityai-ai-community)")
    );
    assert_eq!(spec.components[3].stage, model_spec::spec::Stage::Denoiser);
}

#[test]
fn dense_head_from_modules_json() {
    let (_s, m) = fetch_one(dense_head(), dense_head_entry());
    let want = checked_in_spec("text_embedding/stella-en-1-5b-v5.toml");
    assert_eq!(m.components.len(), 2);
    assert_eq!(m.components[1].name, "dense_1024");
    assert_eq!(m.components[1].family, Family::Dense);
    assert_eq!(m.components[1].files, ["2_Dense_1024/model.safetensors"]);
    for (got, exp) in m.components.iter().zip(&want.components) {
        assert_inventory(got, exp);
    }
    let spec = load_spec(&m.spec_path).unwrap().spec;
    assert_eq!(
        spec.serving_u64("embedding_dim"),
        Some(1024),
        "the Dense head's output"
    );
    assert_eq!(spec.serving_u64("max_input_tokens"), Some(512));
    assert_headers_only(&m);
}

#[test]
fn multipart_gguf_by_growing_range_reads() {
    let (_s, m) = fetch_one(gguf_multipart(), gguf_multipart_entry());
    assert_eq!(m.components[0].files.len(), 3);
    assert_eq!(m.components[0].family, Family::Phi3);
    let want = checked_in_spec("text_to_text/phi-4.toml");
    assert_inventory(&m.components[0], &want.components[0]);
    assert!(
        m.transfer.range_requests >= 4,
        "the first part's header needs a second, larger read"
    );
    assert_headers_only(&m);
    let spec = load_spec(&m.spec_path).unwrap().spec;
    let c = &spec.components[0];
    assert_eq!(c.arch_u64("hidden_size"), Some(5120));
    assert_eq!(c.arch_u64("vocab_size"), Some(100_352));
    assert_eq!(c.arch_u64("head_dim"), Some(128));
    assert_eq!(
        c.architecture["file_type"].get_ref().value.as_str(),
        Some("Q4_K_M")
    );
    assert_eq!(spec.serving_u64("max_input_tokens"), Some(16_384));
}

#[test]
fn offline_runs_read_the_cache() {
    let hub = FixtureHub::start(vec![minilm()]);
    let s = setup(&[minilm_entry()]);
    let mut o = opts(&hub, &s);
    ok(&o);
    // Explicitly offline, and a Hub that is not there at all.
    o.hub.offline = Some(true);
    o.hub.endpoint = Some("http://127.0.0.1:9".into());
    let (r, _) = ok(&o);
    assert_eq!(r.models[0].outcome, Outcome::Unchanged);
    assert_eq!(r.models[0].transfer.total(), 0);
    assert!(r.offline.is_some());
    // Not told to be offline: the unreachable Hub is noticed and the cache used.
    o.hub.offline = Some(false);
    let (r, log) = ok(&o);
    assert_eq!(r.models[0].outcome, Outcome::Unchanged);
    assert!(log.contains("read from the hub cache only"), "{log}");
    // An empty cache offline is a clear error.
    o.hub.cache_dir = Some(s.cache.with_file_name("empty-cache"));
    let (e, _) = only_error(&o);
    assert!(
        matches!(e, FetchError::Hub(HubError::Offline { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("hub cache has no"), "{e}");
}

#[test]
fn check_mode_reports_stale_files_and_writes_nothing() {
    let hub = FixtureHub::start(vec![minilm()]);
    let s = setup(&[minilm_entry()]);
    let mut o = opts(&hub, &s);
    let (r, _) = ok(&o);
    o.check = true;
    assert_eq!(ok(&o).0.models[0].outcome, Outcome::Unchanged);
    let card = &r.models[0].card_path;
    std::fs::write(card, "edited by hand\n").unwrap();
    assert_eq!(ok(&o).0.models[0].outcome, Outcome::Stale);
    assert_eq!(std::fs::read_to_string(card).unwrap(), "edited by hand\n");
}

#[test]
fn gated_models_say_to_set_hf_token_and_the_token_is_never_shown() {
    let hub = FixtureHub::start(vec![minilm()]);
    let s = setup(&[minilm_entry()]);
    let mut o = opts(&hub, &s);
    hub.fault(Fault::status("/api/models/", 401));
    let (e, _) = only_error(&o);
    assert!(
        matches!(e, FetchError::Hub(HubError::Gated { status: 401, .. })),
        "{e}"
    );
    assert!(e.to_string().contains("set HF_TOKEN"), "{e}");

    let secret = "hf_fixtureSECRETtoken123";
    o.hub.token = Some(secret.into());
    hub.clear_faults();
    hub.fault(Fault::status("model.safetensors", 403));
    let (e, log) = only_error(&o);
    assert!(
        matches!(e, FetchError::Hub(HubError::Gated { status: 403, .. })),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("HF_TOKEN"),
        "{msg}"
    );
    assert!(!msg.contains(secret) && !log.contains(secret) && !format!("{e:?}").contains(secret));
    // The token was used, though.
    assert!(
        hub.log()
            .iter()
            .any(|l| l.authorization.as_deref() == Some(&format!("Bearer {secret}")))
    );
    assert!(
        !s.cards.join("text_embedding").exists(),
        "nothing written on failure"
    );
}

#[test]
fn not_found_names_the_repo_or_the_file() {
    let hub = FixtureHub::start(vec![minilm()]);
    let missing = minilm_profile_entry(
        "fixture/does-not-exist",
        "text_embedding/missing.toml",
        "safetensors",
        &["model.safetensors"],
    );
    let s = setup(&[missing]);
    let (e, _) = only_error(&opts(&hub, &s));
    assert!(
        e.to_string()
            .contains("repository `fixture/does-not-exist` was not found"),
        "{e}"
    );

    let wrong_file = minilm_profile_entry(
        "sentence-transformers/all-MiniLM-L6-v2",
        "text_embedding/all-minilm-l6-v2.toml",
        "safetensors",
        &["pytorch_model.safetensors"],
    );
    let s = setup(&[wrong_file]);
    let (e, _) = only_error(&opts(&hub, &s));
    assert!(
        e.to_string().contains("file `pytorch_model.safetensors`"),
        "{e}"
    );

    // Listed, but the server says 404 when it is read.
    let s = setup(&[minilm_entry()]);
    hub.fault(Fault::status("/resolve/", 404));
    let (e, _) = only_error(&opts(&hub, &s));
    assert!(
        matches!(e, FetchError::Hub(HubError::NotFound { .. })),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("in `sentence-transformers/all-MiniLM-L6-v2`"),
        "{e}"
    );
}

#[test]
fn rate_limits_and_server_errors_are_retried_then_reported() {
    let hub = FixtureHub::start(vec![minilm()]);
    let s = setup(&[minilm_entry()]);
    let o = opts(&hub, &s);
    // Two 429s then success: retried.
    hub.fault(Fault::Status {
        path: "model.safetensors".into(),
        method: Some("GET"),
        status: 429,
        times: Some(2),
    });
    ok(&o);
    std::fs::remove_dir_all(&s.cache).unwrap();

    for status in [429u16, 503] {
        hub.clear_faults();
        hub.clear_log();
        hub.fault(Fault::Status {
            path: "resolve/".into(),
            method: Some("GET"),
            status,
            times: None,
        });
        let (e, _) = only_error(&o);
        match &e {
            FetchError::Hub(HubError::Unavailable {
                status: got,
                attempts,
                ..
            }) => {
                assert_eq!((*got, *attempts), (status, 3), "{e}");
            }
            other => panic!("expected Unavailable, got {other}"),
        }
        assert!(e.to_string().contains("after 3 attempts"), "{e}");
        // Bounded: exactly 1 + 2 retries of the failing GET, then it gave up.
        let gets = hub
            .log()
            .iter()
            .filter(|l| l.method == "GET" && l.url.contains("resolve/"))
            .count();
        assert_eq!(gets, 3);
    }
}

#[test]
fn truncated_bodies_are_errors() {
    let hub = FixtureHub::start(vec![minilm()]);
    let s = setup(&[minilm_entry()]);
    let o = opts(&hub, &s);
    hub.fault(Fault::Truncate {
        path: "model.safetensors".into(),
        keep: 100,
    });
    let (e, _) = only_error(&o);
    assert!(
        matches!(e, FetchError::Hub(HubError::Truncated { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    hub.clear_faults();
    hub.fault(Fault::Truncate {
        path: "README.md".into(),
        keep: 10,
    });
    let (e, _) = only_error(&o);
    assert!(
        matches!(e, FetchError::Hub(HubError::Truncated { .. })),
        "{e}"
    );
    assert!(!s.cards.join("text_embedding").exists());
}

fn bad_repo(id: &str, file: &str, body: Body) -> FixtureRepo {
    FixtureRepo::new(id)
        .json("config.json", &serde_json::json!({"model_type": "bert"}))
        .file(file, body)
}

#[test]
fn malformed_headers_are_clear_errors() {
    let mut lie = 1_000_000u64.to_le_bytes().to_vec();
    lie.extend_from_slice(b"{}");
    let mut huge = (200u64 << 20).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let mut garbage = 16u64.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"\x00\x01not json here!");
    let cases = [
        (
            "fixture/too-long",
            "model.safetensors",
            Body::bytes(lie),
            "but the file is only",
        ),
        (
            "fixture/over-limit",
            "model.safetensors",
            Body::sparse(huge, 1 << 30),
            "limit",
        ),
        (
            "fixture/not-json",
            "model.safetensors",
            Body::sparse(garbage, 10_000),
            "not JSON",
        ),
        (
            "fixture/short",
            "model.safetensors",
            Body::bytes(vec![1, 2, 3]),
            "too short",
        ),
        (
            "fixture/bad-gguf",
            "model.gguf",
            Body::sparse(b"GGUF\x03\x00\x00\x00junk".to_vec(), 100_000),
            "not a GGUF header",
        ),
    ];
    let repos = cases
        .iter()
        .map(|(id, f, b, _)| bad_repo(id, f, b.clone()))
        .collect();
    let hub = FixtureHub::start(repos);
    for (id, file, _, want) in cases {
        let format = if file.ends_with(".gguf") {
            "gguf"
        } else {
            "safetensors"
        };
        let s = setup(&[minilm_profile_entry(
            id,
            "text_embedding/bad.toml",
            format,
            &[file],
        )]);
        let (e, _) = only_error(&opts(&hub, &s));
        assert!(matches!(e, FetchError::BadHeader { .. }), "{id}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(want) && msg.contains(id) && msg.contains(file),
            "{id}: {msg}"
        );
        assert!(
            !s.cards.join("text_embedding").exists(),
            "{id}: wrote a file"
        );
    }
    // A server that answers a byte range with the whole file is refused, not followed.
    let s = setup(&[minilm_entry()]);
    let hub = FixtureHub::start(vec![minilm()]);
    hub.fault(Fault::IgnoreRange {
        path: "model.safetensors".into(),
    });
    let (e, _) = only_error(&opts(&hub, &s));
    assert!(
        matches!(e, FetchError::Hub(HubError::RangeIgnored { .. })),
        "{e}"
    );
}

#[test]
fn invalid_repo_ids_are_rejected_before_any_request() {
    let hub = FixtureHub::start(vec![]);
    let s = setup(&[minilm_profile_entry(
        "not a repo",
        "text_embedding/x.toml",
        "safetensors",
        &["model.safetensors"],
    )]);
    let (mut log, _) = Log::captured();
    let e = run(&opts(&hub, &s), &mut log).unwrap_err();
    assert!(e.to_string().contains("is not a Hub repo id"), "{e}");
    let s = setup(&[minilm_entry()]);
    let mut o = opts(&hub, &s);
    o.models = vec!["../../etc/passwd".into()];
    let e = run(&o, &mut log).unwrap_err();
    assert!(matches!(e, FetchError::InvalidRepoId(_)), "{e}");
    assert!(hub.log().is_empty());
}

#[test]
fn a_failed_refresh_leaves_the_previous_files_intact() {
    let hub = FixtureHub::start(vec![sharded_qwen2(), minilm()]);
    let s = setup(&[
        minilm_entry(),
        entry_toml(
            "fixture/gte-qwen2-sharded",
            "text_embedding",
            "text_embedding/gte-qwen2-sharded.toml",
            "safetensors",
            &[
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
            ],
            "Alibaba-NLP/gte-Qwen2-1.5B-instruct",
        ),
    ]);
    let o = opts(&hub, &s);
    let (r, _) = ok(&o);
    let (spec, card) = (&r.models[1].spec_path, &r.models[1].card_path);
    // Pretend the files on disk are from an older commit.
    let old_spec = std::fs::read_to_string(spec)
        .unwrap()
        .replace("fetch-cards` from", "fetch-cards` (old) from");
    std::fs::write(spec, &old_spec).unwrap();
    std::fs::write(card, "old card\n").unwrap();
    std::fs::remove_dir_all(&s.cache).unwrap();
    // The second shard's header breaks off mid-transfer.
    hub.fault(Fault::Truncate {
        path: "model-00002-of-00002.safetensors".into(),
        keep: 1000,
    });
    let (r, _) = fetch(&o);
    assert_eq!(r.models.len(), 1, "MiniLM still refreshed");
    assert_eq!(r.failures[0].key, "fixture/gte-qwen2-sharded");
    assert_eq!(std::fs::read_to_string(spec).unwrap(), old_spec);
    assert_eq!(std::fs::read_to_string(card).unwrap(), "old card\n");
    no_temp_files(&s.cards);
}

fn fetch_cards_cmd(hub_url: &str, s: &Setup) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fetch-cards"));
    c.arg("--cards")
        .arg(&s.cards)
        .env("HF_ENDPOINT", hub_url)
        .env("HF_HOME", s.cache.join("home"))
        .env("HF_HUB_CACHE", &s.cache)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1");
    c
}

#[test]
fn cli_end_to_end() {
    let hub = FixtureHub::start(vec![minilm(), dense_head()]);
    let s = setup(&[
        minilm_entry(),
        entry_toml(
            "fixture/stella-dense",
            "text_embedding",
            "text_embedding/stella-dense.toml",
            "safetensors",
            &["model.safetensors", "2_Dense_1024/model.safetensors"],
            "dunzhang/stella_en_1.5B_v5",
        ),
    ]);
    let out_dir = s.cards.with_file_name("out");
    let o = fetch_cards_cmd(&hub.url, &s)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("fetch-cards: 2 fetched, 0 failed"),
        "{stdout}"
    );
    assert!(
        stderr.contains("sentence-transformers/all-MiniLM-L6-v2: written"),
        "{stderr}"
    );
    assert!(stderr.contains("B of headers in"), "{stderr}");
    assert!(out_dir.join("text_embedding/STELLA-DENSE.md").exists());
    assert!(!s.cards.join("text_embedding").exists(), "--out honoured");
    println!("{stderr}{stdout}");

    let again = fetch_cards_cmd(&hub.url, &s)
        .args(["--check", "--models", "fixture/stella-dense", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    std::fs::write(out_dir.join("text_embedding/STELLA-DENSE.md"), "x").unwrap();
    let stale = fetch_cards_cmd(&hub.url, &s)
        .args(["--check", "--models", "fixture/stella-dense", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(!stale.status.success());
    assert!(
        String::from_utf8_lossy(&stale.stderr)
            .contains("run `cargo xtask fetch-cards --models fixture/stella-dense` and commit")
    );
}

#[test]
fn killing_the_command_mid_fetch_leaves_the_previous_files_intact() {
    let hub = FixtureHub::start(vec![minilm()]);
    let s = setup(&[minilm_entry()]);
    let spec = s.cards.join("text_embedding/all-minilm-l6-v2.toml");
    let card = s.cards.join("text_embedding/ALL-MINILM-L6-V2.md");
    std::fs::create_dir_all(spec.parent().unwrap()).unwrap();
    std::fs::write(&spec, "old spec\n").unwrap();
    std::fs::write(&card, "old card\n").unwrap();
    hub.fault(Fault::Stall {
        path: "model.safetensors".into(),
    });
    let mut child = fetch_cards_cmd(&hub.url, &s)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while hub.stalled() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the command never read the header"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    hub.release_stalls();
    assert_eq!(std::fs::read_to_string(&spec).unwrap(), "old spec\n");
    assert_eq!(std::fs::read_to_string(&card).unwrap(), "old card\n");
    no_temp_files(&s.cards);
}

#[test]
fn inventory_rows_match_an_independent_sum() {
    // The fixtures' expected values come from the checked-in specs; check that those agree
    // with a plain sum over the fixture's own tensor list, so a fixture cannot drift.
    let spec = checked_in_spec("text_to_text/phi-4.toml");
    let tensors = model_spec::shapes::derive(&spec.components[0]).unwrap();
    let total: u64 = tensors.iter().map(|t| t.bytes()).sum();
    let inv = inventory(&tensors, &["token_embd.weight".into()]);
    assert_eq!(inv.iter().map(|r| r.bytes).sum::<u64>(), total);
    assert_eq!(
        inv.iter().map(|r| r.tensors).sum::<u64>(),
        tensors.len() as u64
    );
}

#[test]
fn one_run_over_every_fixture_reports_bytes_per_model() {
    let hub = FixtureHub::start(vec![
        minilm(),
        sharded_qwen2(),
        diffusers_sd3(),
        dense_head(),
        gguf_multipart(),
    ]);
    let s = setup(&[
        minilm_entry(),
        sharded_qwen2_entry(),
        diffusers_sd3_entry(),
        dense_head_entry(),
        gguf_multipart_entry(),
    ]);
    let (r, log) = ok(&opts(&hub, &s));
    println!("{log}");
    println!(
        "| model | weight bytes | header bytes | range reads | small-file bytes | headers / weights |"
    );
    for m in &r.models {
        println!(
            "| {} | {} | {} | {} | {} | {:.5} % |",
            m.key,
            m.weight_bytes,
            m.transfer.range_bytes,
            m.transfer.range_requests,
            m.transfer.file_bytes,
            m.header_percent()
        );
        if m.key == "sentence-transformers/all-MiniLM-L6-v2" {
            // Its real header alone (8 + 11,408 B) is 0.0126 % of its 87 MB of weights: the least any
            // header-only reader can transfer, and exactly what was transferred.
            assert_eq!(
                m.transfer.range_bytes,
                8 + 11_408,
                "length prefix + JSON header"
            );
        } else {
            assert_headers_only(m);
        }
        // What the server sent for this repo's weight files is what the report counts (small
        // files are downloaded whole, with a `bytes=0-` range too).
        let weight_file = |url: &str| url.ends_with(".safetensors") || url.ends_with(".gguf");
        let sent: u64 = hub
            .log()
            .iter()
            .filter(|l| l.range.is_some() && l.url.contains(m.key.as_str()) && weight_file(&l.url))
            .map(|l| l.sent)
            .sum();
        assert_eq!(sent, m.transfer.range_bytes, "{}", m.key);
    }
    assert_eq!(r.models.len(), 5);
    // To look at what was written: FETCH_CARDS_SAMPLE_OUT=<dir> cargo test -p fetch-cards one_run
    if let Some(dir) = std::env::var_os("FETCH_CARDS_SAMPLE_OUT") {
        for f in walk(&s.cards) {
            let to = Path::new(&dir).join(f.strip_prefix(&s.cards).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&f, &to).unwrap();
        }
    }
}
