//! Whole-model downloads against the fixture hub (the Hub's URL paths, HEAD, Range, ETag and
//! the CDN redirect of LFS files): bytes counted on the server side, the cache layout checked
//! on disk.

use std::path::Path;
use std::time::Duration;

use fixture_hub::{Body, Fault, FixtureHub, FixtureRepo};
use model_hub::{FileSelection, HubClient, HubError, HubOptions, Silent, Snapshot};

const REPO: &str = "acme/tiny-embedder";

/// Deterministic, incompressible-looking bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn weights() -> Vec<u8> {
    noise(3 << 20, 7)
}

fn repo() -> FixtureRepo {
    FixtureRepo::new(REPO)
        .json("config.json", &serde_json::json!({"model_type": "bert"}))
        .file(
            "tokenizer.json",
            Body::bytes(b"{\"version\":\"1.0\"}".to_vec()),
        )
        .file("1_Pooling/config.json", Body::bytes(b"{}".to_vec()))
        .file("model.safetensors", Body::lfs(weights()))
        .file("README.md", Body::bytes(b"# a card\n".to_vec()))
        .file("onnx/model.onnx", Body::lfs(noise(1 << 20, 9)))
        .file("pytorch_model.bin", Body::lfs(noise(1 << 20, 11)))
}

/// Wanted: weights + configs; not the card, ONNX or pickle files.
const WANTED_BYTES_EXCLUDING_WEIGHTS: &[&str] =
    &["1_Pooling/config.json", "config.json", "tokenizer.json"];

fn client(hub: &FixtureHub, cache: &Path, offline: bool) -> HubClient {
    HubClient::new(&HubOptions {
        endpoint: Some(hub.url.clone()),
        cache_dir: Some(cache.to_path_buf()),
        token: None,
        offline: Some(offline),
        retries: 1,
        retry_base_delay: Duration::from_millis(10),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
    })
    .unwrap()
}

fn selection() -> FileSelection {
    FileSelection::weights(["model.safetensors"]).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn fetch(client: &HubClient) -> Result<Snapshot, HubError> {
    rt().block_on(client.snapshot(REPO, "main", &selection(), &Silent))
}

fn wanted_bytes(hub: &FixtureHub) -> u64 {
    WANTED_BYTES_EXCLUDING_WEIGHTS
        .iter()
        .chain(["model.safetensors"].iter())
        .map(|p| hub.body(REPO, p).unwrap().size())
        .sum()
}

/// A hub whose first transfer of the weights breaks off after `keep` bytes, a cache holding
/// what that first (failed) fetch left, and a client on both; the fault is cleared.
fn interrupted(keep: usize) -> (FixtureHub, tempfile::TempDir, HubClient, HubError) {
    let hub = FixtureHub::start(vec![repo()]);
    hub.fault(Fault::Truncate {
        path: "model.safetensors".into(),
        keep,
    });
    let cache = tempfile::tempdir().unwrap();
    let c = client(&hub, cache.path(), false);
    let err = fetch(&c).unwrap_err();
    hub.clear_faults();
    (hub, cache, c, err)
}

#[test]
fn first_run_downloads_the_model_files_second_reuses_them_offline_fetches_nothing() {
    let hub = FixtureHub::start(vec![repo()]);
    let cache = tempfile::tempdir().unwrap();
    let c = client(&hub, cache.path(), false);

    let first = fetch(&c).unwrap();
    assert_eq!(first.commit, hub.sha(REPO));
    assert_eq!(first.downloaded_bytes, wanted_bytes(&hub));
    assert_eq!(
        hub.file_bytes_sent(),
        wanted_bytes(&hub),
        "{:#?}",
        hub.log()
    );
    assert_eq!(
        first.files,
        [
            "1_Pooling/config.json",
            "config.json",
            "model.safetensors",
            "tokenizer.json"
        ]
    );
    assert_eq!(
        std::fs::read(first.dir.join("model.safetensors")).unwrap(),
        weights()
    );
    assert!(first.dir.join("1_Pooling/config.json").is_file());
    assert!(!first.dir.join("README.md").exists());
    assert!(!first.dir.join("pytorch_model.bin").exists());
    // The layout the Python client reads: refs, blobs named by sha256, relative links.
    let repo_dir = cache.path().join("models--acme--tiny-embedder");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        hub.sha(REPO)
    );
    let sha = hub
        .body(REPO, "model.safetensors")
        .unwrap()
        .sha256()
        .to_owned();
    assert!(repo_dir.join("blobs").join(&sha).is_file());
    let link = std::fs::read_link(first.dir.join("model.safetensors")).unwrap();
    assert!(link.is_relative(), "{link:?}");
    assert!(link.ends_with(Path::new("blobs").join(&sha)));
    let no_partials = std::fs::read_dir(repo_dir.join("blobs")).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".incomplete")
    });
    assert!(no_partials);

    hub.clear_log();
    let second = fetch(&c).unwrap();
    assert_eq!(second.downloaded_bytes, 0);
    assert_eq!(second.cached_files, 4);
    assert_eq!(hub.file_bytes_sent(), 0, "{:#?}", hub.log());

    hub.clear_log();
    let offline = fetch(&client(&hub, cache.path(), true)).unwrap();
    assert_eq!(offline.dir, first.dir);
    assert_eq!(offline.downloaded_bytes, 0);
    assert!(offline.offline.is_some());
    assert!(
        hub.log().is_empty(),
        "offline must not ask the Hub: {:#?}",
        hub.log()
    );
}

#[test]
fn offline_with_nothing_cached_names_what_is_missing() {
    let hub = FixtureHub::start(vec![repo()]);
    let cache = tempfile::tempdir().unwrap();
    let err = fetch(&client(&hub, cache.path(), true)).unwrap_err();
    assert!(matches!(err, HubError::Offline { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(REPO) && msg.contains("revision `main`"),
        "{msg}"
    );
    assert!(hub.log().is_empty());
}

#[test]
fn an_unreachable_hub_falls_back_to_a_complete_cache() {
    let hub = FixtureHub::start(vec![repo()]);
    let cache = tempfile::tempdir().unwrap();
    fetch(&client(&hub, cache.path(), false)).unwrap();
    let url = hub.url.clone();
    drop(hub);
    let gone = HubClient::new(&HubOptions {
        endpoint: Some(url),
        cache_dir: Some(cache.path().to_path_buf()),
        offline: Some(false),
        retries: 0,
        ..HubOptions::default()
    })
    .unwrap();
    let snap = fetch(&gone).unwrap();
    assert_eq!(snap.downloaded_bytes, 0);
    assert!(snap.offline.unwrap().contains("unreachable"));
}

#[test]
fn a_corrupted_lfs_file_is_removed_and_fails_naming_both_hashes() {
    let hub = FixtureHub::start(vec![repo()]);
    hub.fault(Fault::Corrupt {
        path: "model.safetensors".into(),
    });
    let cache = tempfile::tempdir().unwrap();
    let err = fetch(&client(&hub, cache.path(), false)).unwrap_err();
    let sha = hub
        .body(REPO, "model.safetensors")
        .unwrap()
        .sha256()
        .to_owned();
    match &err {
        HubError::Integrity {
            file,
            expected,
            actual,
            ..
        } => {
            assert_eq!(file, "model.safetensors");
            assert_eq!(expected, &sha);
            assert_ne!(actual, &sha);
        }
        other => panic!("expected an integrity error, got {other}"),
    }
    let blobs = cache.path().join("models--acme--tiny-embedder/blobs");
    assert!(!blobs.join(&sha).exists());
    assert!(!blobs.join(format!("{sha}.incomplete")).exists());
    let snap = cache
        .path()
        .join("models--acme--tiny-embedder/snapshots")
        .join(hub.sha(REPO));
    assert!(!snap.join("model.safetensors").exists());

    // Once the mirror serves the right bytes, the next run succeeds.
    hub.clear_faults();
    let ok = fetch(&client(&hub, cache.path(), false)).unwrap();
    assert_eq!(
        std::fs::read(ok.dir.join("model.safetensors")).unwrap(),
        weights()
    );
}

#[test]
fn a_download_killed_midway_resumes_from_its_partial_file() {
    let keep = 1_000_000;
    let (hub, cache, c, err) = interrupted(keep);
    assert!(matches!(err, HubError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("resume"), "{err}");
    let sha = hub
        .body(REPO, "model.safetensors")
        .unwrap()
        .sha256()
        .to_owned();
    let blobs = cache.path().join("models--acme--tiny-embedder/blobs");
    let partial = blobs.join(format!("{sha}.incomplete"));
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), keep as u64);
    assert!(
        !blobs.join(&sha).exists(),
        "a partial file never stands at the final path"
    );

    hub.clear_log();
    let snap = fetch(&c).unwrap();
    let size = weights().len() as u64;
    // The rest of the weights, and tokenizer.json, which comes after them in path order.
    let tokenizer = hub.body(REPO, "tokenizer.json").unwrap().size();
    assert_eq!(snap.downloaded_bytes, size - keep as u64 + tokenizer);
    let ranged: Vec<_> = hub
        .log()
        .into_iter()
        .filter(|l| l.url.starts_with("/cdn/") && l.method == "GET")
        .collect();
    assert_eq!(ranged.len(), 1, "{ranged:#?}");
    assert_eq!(
        ranged[0].range.as_deref(),
        Some(format!("bytes={keep}-{}", size - 1).as_str())
    );
    assert_eq!(
        std::fs::read(snap.dir.join("model.safetensors")).unwrap(),
        weights()
    );
    assert!(!partial.exists());
}

#[test]
fn a_server_that_ignores_the_range_restarts_the_file() {
    let (hub, _cache, c, _) = interrupted(500_000);
    hub.fault(Fault::IgnoreRange {
        path: "model.safetensors".into(),
    });
    let snap = fetch(&c).unwrap();
    assert_eq!(
        std::fs::read(snap.dir.join("model.safetensors")).unwrap(),
        weights()
    );
}

#[test]
fn two_concurrent_fetches_of_one_model_download_it_once() {
    let hub = FixtureHub::start(vec![repo()]);
    let cache = tempfile::tempdir().unwrap();
    let c = client(&hub, cache.path(), false);
    let (a, b) = rt().block_on(async {
        let sel = selection();
        tokio::join!(
            c.snapshot(REPO, "main", &sel, &Silent),
            c.snapshot(REPO, "main", &sel, &Silent)
        )
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.dir, b.dir);
    let weights_sent = hub.bytes_sent_matching("/cdn/");
    assert_eq!(weights_sent, weights().len() as u64, "{:#?}", hub.log());
}

#[test]
fn hub_errors_name_the_repository_and_the_fix() {
    let hub = FixtureHub::start(vec![repo()]);
    let cache = tempfile::tempdir().unwrap();
    let c = client(&hub, cache.path(), false);
    let rt = rt();

    let err = rt
        .block_on(c.snapshot("acme/missing", "main", &selection(), &Silent))
        .unwrap_err();
    assert!(matches!(err, HubError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("acme/missing"), "{err}");

    let err = rt
        .block_on(c.snapshot(REPO, "no-such-branch", &selection(), &Silent))
        .unwrap_err();
    assert!(err.to_string().contains("no-such-branch"), "{err}");

    let err = rt
        .block_on(c.snapshot(
            REPO,
            "main",
            &FileSelection::weights(["model-*.gguf"]).unwrap(),
            &Silent,
        ))
        .unwrap_err();
    assert!(matches!(err, HubError::NoMatch { .. }), "{err}");
    assert!(err.to_string().contains("model-*.gguf"), "{err}");

    let err = rt
        .block_on(c.snapshot("../etc", "main", &selection(), &Silent))
        .unwrap_err();
    assert!(matches!(err, HubError::InvalidRepoId(_)), "{err}");

    for (status, expect) in [
        (401, "HF_TOKEN"),
        (403, "HF_TOKEN"),
        (429, "rate-limiting"),
        (503, "HTTP 503"),
    ] {
        hub.clear_faults();
        hub.fault(Fault::status("model.safetensors", status));
        let err = rt
            .block_on(c.snapshot(REPO, "main", &selection(), &Silent))
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(expect) && msg.contains(REPO),
            "{status}: {msg}"
        );
    }
    hub.clear_faults();
    hub.fault(Fault::status("/tree/", 500));
    let err = rt
        .block_on(c.snapshot(REPO, "main", &selection(), &Silent))
        .unwrap_err();
    assert!(
        matches!(err, HubError::Unavailable { status: 500, .. }),
        "{err}"
    );
}

#[test]
fn the_token_is_sent_but_never_shown() {
    let hub = FixtureHub::start(vec![repo()]);
    let cache = tempfile::tempdir().unwrap();
    let secret = "hf_secret_token_value";
    let c = HubClient::new(&HubOptions {
        endpoint: Some(hub.url.clone()),
        cache_dir: Some(cache.path().to_path_buf()),
        token: Some(secret.into()),
        offline: Some(false),
        retries: 0,
        ..HubOptions::default()
    })
    .unwrap();
    hub.fault(Fault::status("model.safetensors", 401));
    let err = fetch(&c).unwrap_err();
    assert!(!err.to_string().contains(secret));
    assert!(!format!("{c:?}").contains(secret));
    let sent = hub.log();
    assert!(
        sent.iter()
            .any(|l| l.authorization.as_deref() == Some(&format!("Bearer {secret}")))
    );
}

#[test]
fn too_little_disk_is_refused_before_a_byte_is_fetched() {
    // A petabyte of weights, listed with a declared hash (it is never read).
    let huge = Body::sparse_lfs(b"x".to_vec(), 1 << 50).declared_sha256(&"ab".repeat(32));
    let hub = FixtureHub::start(vec![repo().file("model.safetensors", huge)]);
    let cache = tempfile::tempdir().unwrap();
    let err = fetch(&client(&hub, cache.path(), false)).unwrap_err();
    match &err {
        HubError::DiskSpace { need, free, .. } => {
            assert!(*need >= 1 << 50 && free < need);
        }
        other => panic!("expected a disk-space refusal, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("HF_HUB_CACHE") && msg.contains(REPO), "{msg}");
    assert_eq!(hub.file_bytes_sent(), 0, "{:#?}", hub.log());
}
