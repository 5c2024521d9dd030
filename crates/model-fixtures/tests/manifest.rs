//! `write-fixtures`' output is servable as it is: every manifest entry, given only its key,
//! backend and path, answers one request through one pool.

use model_fixtures::manifest;
use model_pool::size::GIB;
use model_pool::{DeviceId, MemoryGovernor};
use model_registry::Capability;
use model_serving::{GenerateRequest, ImageRequest, ModelPool, ServedModel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_in_the_manifest_serves_one_request() {
    let dir = model_fixtures::scratch("manifest");
    let written = manifest::write_all(&dir).unwrap();
    assert_eq!(
        manifest::read(&dir).unwrap(),
        written,
        "the manifest on disk is what was written"
    );
    assert_eq!(written.len(), 11);
    let mut builder = ModelPool::builder()
        .governor(MemoryGovernor::with_budgets([(DeviceId::Cpu, 8 * GIB)]).unwrap());
    for f in &written {
        let backend = model_serving::config::parse_backend(&f.family).unwrap();
        builder =
            builder.model(ServedModel::with_backend(&f.key, dir.join(&f.path), backend).unwrap());
    }
    let pool = builder.build().unwrap();
    for f in &written {
        let capability = model_registry::ALL
            .iter()
            .map(|m| m.capability)
            .find(|c| c.as_str() == f.capability)
            .unwrap();
        match capability {
            Capability::TextEmbedding => {
                let v = pool.embed(&f.key, ["hello world"]).await.unwrap();
                assert!(!v[0].is_empty(), "{}", f.key);
            }
            Capability::ImageEmbedding => {
                let image = model_serving::report::noise_image(40, 30, 1);
                let v = pool.embed_images(&f.key, vec![image]).await.unwrap();
                assert!(!v[0].is_empty(), "{}", f.key);
                pool.embed(&f.key, ["a photo of a cat"]).await.unwrap();
            }
            Capability::TextToText | Capability::Vision => {
                let answer = pool
                    .generate(
                        &f.key,
                        GenerateRequest::user("hello").greedy().max_tokens(2),
                    )
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                assert!(!answer.tokens.is_empty(), "{}", f.key);
            }
            Capability::TextToImage => {
                let image = pool
                    .generate_image(
                        &f.key,
                        ImageRequest::new("a red fox").size(64, 64).steps(1),
                        |_| {},
                    )
                    .await
                    .unwrap();
                assert_eq!((image.width, image.height), (64, 64));
                assert!(image.png.starts_with(b"\x89PNG"));
            }
        }
    }
    pool.shutdown().await;
    assert_eq!(pool.governor().total_reserved(), 0);
    std::fs::remove_dir_all(&dir).ok();
}
