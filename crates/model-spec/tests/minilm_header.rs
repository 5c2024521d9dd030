//! The MiniLM facts against the real safetensors header.

mod common;

use model_spec::shapes::{derive, inventory};
use model_spec::spec::InventoryRow;
use model_spec::{DType, estimate::loaded_weight_bytes};
use std::collections::BTreeMap;

/// Inventory of a real safetensors file, read with the `safetensors` crate (header only).
/// Tensor name → (dtype, shape).
type Shapes = BTreeMap<String, (String, Vec<usize>)>;

fn header_inventory(bytes: &[u8]) -> (Vec<InventoryRow>, Shapes) {
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(bytes).expect("valid safetensors header");
    let mut rows: BTreeMap<DType, (u64, u64, u64)> = BTreeMap::new();
    let mut tensors = BTreeMap::new();
    for (name, info) in meta.tensors() {
        let dtype: DType = format!("{:?}", info.dtype).parse().expect("known dtype");
        let numel: u64 = info.shape.iter().map(|&d| d as u64).product();
        let e = rows.entry(dtype).or_default();
        e.0 += 1;
        e.1 += numel;
        e.2 += (info.data_offsets.1 - info.data_offsets.0) as u64;
        tensors.insert(name.clone(), (dtype.to_string(), info.shape.clone()));
    }
    let rows = rows
        .into_iter()
        .map(|(dtype, (tensors, params, bytes))| InventoryRow {
            dtype,
            tensors,
            params,
            bytes,
            name: None,
        })
        .collect();
    (rows, tensors)
}

fn minilm_bytes() -> Vec<u8> {
    let path = common::minilm_dir().join("model.safetensors");
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn minilm_weight_bytes_equal_the_real_header() {
    let (mut real, _) = header_inventory(&minilm_bytes());
    let reg = common::registry();
    let m = reg.get("sentence-transformers/all-MiniLM-L6-v2").unwrap();
    let comp = &m.spec.spec.components[0];
    let mut recorded = comp.weights.inventory.clone();
    real.sort_by_key(|r| r.dtype);
    recorded.sort_by_key(|r| r.dtype);
    assert_eq!(recorded, real, "spec inventory must equal the real header");
    let header_tensor_bytes: u64 = real.iter().map(|r| r.bytes).sum();
    assert_eq!(header_tensor_bytes, 90_856_960);
    // F32 loaded as F32: the estimator's weights part is exactly the header's tensor bytes.
    assert_eq!(
        loaded_weight_bytes(comp, &m.entry.profile),
        header_tensor_bytes
    );
    let mem = m.spec.spec.memory.as_ref().unwrap();
    assert_eq!(mem.weights_bytes, header_tensor_bytes);
}

#[test]
fn bert_shape_derivation_reproduces_the_real_header_tensor_by_tensor() {
    let (_, real) = header_inventory(&minilm_bytes());
    let reg = common::registry();
    let comp = &reg
        .get("sentence-transformers/all-MiniLM-L6-v2")
        .unwrap()
        .spec
        .spec
        .components[0];
    let derived: Shapes = derive(comp)
        .unwrap()
        .into_iter()
        .map(|t| {
            (
                t.name,
                (
                    t.dtype.to_string(),
                    t.shape.iter().map(|&d| d as usize).collect(),
                ),
            )
        })
        .collect();
    assert_eq!(derived, real);
    let (rows, _) = header_inventory(&minilm_bytes());
    let mut from_shapes = inventory(&derive(comp).unwrap(), &[]);
    from_shapes.sort_by_key(|r| r.dtype);
    let mut rows = rows;
    rows.sort_by_key(|r| r.dtype);
    assert_eq!(from_shapes, rows);
}
