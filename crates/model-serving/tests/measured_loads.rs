//! Loads of different capabilities requested at the same moment each record their own
//! memory: the measured-load lock is process-wide, not one per loader. (A test binary of its
//! own: resident-set deltas are process-wide, so nothing else may load beside it.)

use model_fixtures::decode::{Geometry, write_phi3};
use model_fixtures::embed::{JinaGeometry, write_jina};
use model_pool::size::GIB;
use model_pool::{DeviceId, MemoryGovernor};
use model_registry::Backend;
use model_serving::{GenerateRequest, ModelPool, ServedModel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedder_and_a_generator_loading_at_once_each_measure_their_own_bytes() {
    // An embedder of ~48 MiB of F32 weights beside a generator of ~1 MiB: overlapping loads
    // would give the small one the large one's bytes.
    let jina = model_fixtures::scratch("jina");
    write_jina(
        &jina,
        &JinaGeometry {
            vocab: 4096,
            hidden: 512,
            heads: 8,
            intermediate: 1024,
            layers: 2,
            max_positions: 512,
            ..JinaGeometry::TINY
        },
    );
    let phi3 = model_fixtures::scratch("phi3").join("model.gguf");
    write_phi3(&phi3, &Geometry::phi3(), 5);
    let pool = ModelPool::builder()
        .governor(MemoryGovernor::with_budgets([(DeviceId::Cpu, 4 * GIB)]).unwrap())
        .model(ServedModel::with_backend("embedder", &jina, Backend::JinaBert).unwrap())
        .model(ServedModel::with_backend("generator", &phi3, Backend::Phi3Gguf).unwrap())
        .build()
        .unwrap();
    let (embedded, generated) = tokio::join!(pool.embed("embedder", ["hello world"]), async {
        pool.generate(
            "generator",
            GenerateRequest::raw("hello").greedy().max_tokens(2),
        )
        .await
        .unwrap()
        .collect()
        .await
    });
    embedded.unwrap();
    generated.unwrap();
    let m = pool.measurements();
    let (e, g) = (m["embedder"], m["generator"]);
    let (first, second) = if e.window.0 <= g.window.0 {
        (e, g)
    } else {
        (g, e)
    };
    assert!(
        first.window.1 <= second.window.0,
        "the loads overlapped: {first:?} / {second:?}"
    );
    assert!(
        e.resident_bytes >= 32 << 20,
        "the embedder's own weights: {e:?}"
    );
    assert!(
        g.resident_bytes < 24 << 20,
        "the generator's own bytes only: {g:?}"
    );
    let status = pool.status();
    for key in ["embedder", "generator"] {
        let s = status.model(key).unwrap();
        assert_eq!(s.measured_bytes, Some(m[key].resident_bytes), "{key}");
    }
    pool.shutdown().await;
}
