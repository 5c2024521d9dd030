//! A model served from its Hub repository: while its files download, `/status` and
//! `/v1/models` show it `downloading` with bytes done and total; concurrent requests for it
//! share one download and are then answered.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use fixture_hub::{Fault, FixtureHub, FixtureRepo};
use model_server::ServerOptions;
use model_serving::{HubClient, HubOptions, ModelPool, ModelSource, ServedModel};
use serde_json::{Value, json};

const KEY: &str = "sentence-transformers/all-MiniLM-L6-v2";

async fn get_json(server: &TestServer, path: &str) -> Value {
    let r = server.http.get(server.url(path)).send().await.unwrap();
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloading_model_shows_its_bytes_and_concurrent_requests_share_one_download() {
    // A tiny BERT checkpoint stands in for the repository's files.
    let dir = model_fixtures::embed::tiny(model_serving::Family::Bert);
    let repo = FixtureRepo::from_dir("acme/tiny-bert", &dir, FixtureRepo::default_lfs).unwrap();
    let weights = repo.files["model.safetensors"].size();
    let hub = FixtureHub::start(vec![repo]);
    hub.fault(Fault::Stall {
        path: "model.safetensors".into(),
    });
    let cache = tempfile::tempdir().unwrap();
    let client = HubClient::new(&HubOptions {
        endpoint: Some(hub.url.clone()),
        cache_dir: Some(cache.path().to_path_buf()),
        token: None,
        offline: Some(false),
        ..HubOptions::default()
    })
    .unwrap();
    let source = ModelSource::Hub {
        repo: "acme/tiny-bert".into(),
        revision: "main".into(),
        weights: vec!["model.safetensors".into()],
    };
    let pool = ModelPool::builder()
        .governor(common::budget(8 << 30))
        .hub_client(client)
        .model(ServedModel::registry(KEY, source).unwrap())
        .build()
        .unwrap();
    let server = TestServer::serve(pool, ServerOptions::default()).await;

    let embed = |text: &'static str| {
        let http = server.http.clone();
        let url = server.url("/v1/embeddings");
        tokio::spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"model": KEY, "input": text}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let first = embed("hello world");
    let second = embed("rust");

    // The weights' transfer is held by the hub: the model shows as downloading meanwhile.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = get_json(&server, "/status").await;
        if s["models"][0]["state"] == "downloading" && hub.stalled() > 0 {
            break s;
        }
        assert!(Instant::now() < deadline, "never seen downloading: {s:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let download = &status["models"][0]["download"];
    let total = download["bytes_total"].as_u64().unwrap();
    assert!(total > weights, "{download}");
    assert!(
        download["bytes_done"].as_u64().unwrap() < total,
        "{download}"
    );
    let models = get_json(&server, "/v1/models").await;
    assert_eq!(models["data"][0]["state"], "downloading", "{models:#}");
    assert_eq!(models["data"][0]["download"]["bytes_total"], total);

    hub.release_stalls();
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(a.0, 200, "{}", a.1);
    assert_eq!(b.0, 200, "{}", b.1);
    let weight_gets = hub
        .log()
        .iter()
        .filter(|l| l.method == "GET" && l.url.starts_with("/cdn/"))
        .count();
    assert_eq!(
        weight_gets,
        1,
        "one download for both requests: {:#?}",
        hub.log()
    );
    assert_eq!(hub.bytes_sent_matching("/cdn/"), weights);
    let after = get_json(&server, "/status").await;
    assert_eq!(after["models"][0]["state"], "ready", "{after:#}");
    assert!(after["models"][0].get("download").is_none());
}
