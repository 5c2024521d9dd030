//! What `cargo xtask gen-memory-specs` produces: refreshed derived inventories and `[memory]`
//! tables in each spec, each model's card (`<capability>/<SLUG>.md`, see [`crate::card`]) and
//! `MEMORY_SPECS.md`. Pure functions from the checked-in facts to file contents (a card keeps
//! the Hub README overview fetch-cards wrote into it), so `--check`, the tests and the
//! generator agree byte for byte.

use crate::card::{self, Overview};
use crate::error::SpecError;
use crate::estimate::{MB, MemoryEstimate, estimate};
use crate::list::{ModelEntry, load_list};
use crate::memory::{MemorySection, fingerprint};
use crate::profile::RunProfile;
use crate::shapes;
use crate::spec::{ModelSpec, Provenance, parse_spec};
use crate::{LIST_FILE, Registry};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value, value};

/// Name of the generated summary inside the model-cards folder.
pub const MEMORY_SPECS_FILE: &str = "MEMORY_SPECS.md";

/// One file the generator wants on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    pub path: PathBuf,
    pub contents: String,
}

/// A model after generation: its entry, refreshed spec and estimate.
#[derive(Debug, Clone)]
pub struct GeneratedModel {
    pub entry: ModelEntry,
    pub spec: ModelSpec,
    pub estimate: MemoryEstimate,
    /// The figure in the spec's `[memory]` table before this run (`None` when it had none).
    pub previous_mb: Option<u64>,
    /// The card, relative to the model-cards folder (`text_embedding/ALL-MINILM-L6-V2.md`).
    pub card: PathBuf,
}

fn gen_err(path: &Path, field: &str, message: impl Into<String>) -> SpecError {
    SpecError::new(path, field, message)
}

/// `spec` with every `derived` tensor inventory recomputed from its architecture facts; the
/// tensors the profile dequantizes or skips on load get rows of their own.
pub fn with_derived_inventories(
    spec: &ModelSpec,
    profile: &RunProfile,
) -> Result<ModelSpec, shapes::DeriveError> {
    let separate: Vec<String> = profile
        .dequantize_on_load
        .iter()
        .chain(profile.skip_on_load.iter())
        .cloned()
        .collect();
    let mut spec = spec.clone();
    for c in &mut spec.components {
        if c.weights.provenance == Provenance::Derived {
            c.weights.inventory = shapes::inventory(&shapes::derive(c)?, &separate);
        }
    }
    Ok(spec)
}

/// Recomputes derived inventories and the memory section of one spec; returns the new text.
pub fn regenerate_spec(
    path: &Path,
    text: &str,
    entry: &ModelEntry,
) -> Result<(String, ModelSpec, MemoryEstimate), SpecError> {
    let loaded = parse_spec(path, text)?;
    crate::validate::check_against_entry(&loaded, entry)?;
    let profile = entry.profile.clone();
    let mut spec = with_derived_inventories(&loaded.spec, &profile).map_err(|e| {
        gen_err(
            path,
            &format!("component.{}.architecture.{}", e.component, e.field),
            e.to_string(),
        )
    })?;
    let est = estimate(&spec, &profile).map_err(|e| {
        gen_err(path, &e.field, e.to_string())
            .fix("fix the fact or the run profile in model-cards/models.toml")
    })?;
    let section = MemorySection::from_estimate(&est, fingerprint(&spec, &profile), profile);
    spec.memory = Some(section.clone());

    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| gen_err(path, "(document)", e.to_string()))?;
    if let Some(comps) = doc
        .get_mut("component")
        .and_then(Item::as_array_of_tables_mut)
    {
        for (t, c) in comps.iter_mut().zip(&spec.components) {
            if c.weights.provenance != Provenance::Derived {
                continue;
            }
            let Some(w) = t.get_mut("weights").and_then(Item::as_table_mut) else {
                continue;
            };
            let mut arr = Array::new();
            for row in &c.weights.inventory {
                let mut it = InlineTable::new();
                it.insert("dtype", row.dtype.as_str().into());
                it.insert("tensors", (row.tensors as i64).into());
                it.insert("params", (row.params as i64).into());
                it.insert("bytes", (row.bytes as i64).into());
                if let Some(n) = &row.name {
                    it.insert("name", n.as_str().into());
                }
                let mut v = Value::InlineTable(it);
                v.decor_mut().set_prefix("\n  ");
                arr.push_formatted(v);
            }
            arr.set_trailing("\n");
            arr.set_trailing_comma(true);
            w.insert("inventory", value(arr));
        }
    }
    let mut wrapper = toml::Table::new();
    wrapper.insert(
        "memory".into(),
        toml::Value::try_from(&section).map_err(|e| gen_err(path, "memory", e.to_string()))?,
    );
    let mem_text = toml::to_string(&wrapper).map_err(|e| gen_err(path, "memory", e.to_string()))?;
    let mem_doc: DocumentMut = mem_text
        .parse()
        .map_err(|e: toml_edit::TomlError| gen_err(path, "memory", e.to_string()))?;
    doc.remove("memory");
    let mut out = doc.to_string().trim_end().to_owned();
    out.push_str(
        "\n\n# Written by `cargo xtask gen-memory-specs`; do not edit (the build checks it).\n",
    );
    let mut mt: Table = mem_doc
        .get("memory")
        .and_then(Item::as_table)
        .cloned()
        .unwrap_or_default();
    mt.set_implicit(false);
    let mut tail = DocumentMut::new();
    tail.insert("memory", Item::Table(mt));
    out.push_str(&tail.to_string());
    Ok((out, spec, est))
}

/// Everything gen-memory-specs would write for `root` (the model-cards folder).
pub fn generate(root: &Path) -> Result<(Vec<GeneratedFile>, Vec<GeneratedModel>), SpecError> {
    let list = load_list(&root.join(LIST_FILE))?;
    let mut files = Vec::new();
    let mut models = Vec::new();
    for entry in &list.models {
        let path = root.join(&entry.spec);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            gen_err(
                &path,
                "(file)",
                format!("cannot read spec for `{}`: {e}", entry.key.get_ref()),
            )
            .fix("run `cargo xtask fetch-cards` or fix the `spec` path in models.toml")
        })?;
        let previous_mb = parse_spec(&path, &text)?
            .spec
            .memory
            .map(|m| m.est_memory_allocation_mb);
        let (new_text, spec, est) = regenerate_spec(&path, &text, entry)?;
        let card_path = card::card_path(&path);
        let overview = std::fs::read_to_string(&card_path)
            .map_or(Overview::FromSpec, |t| Overview::from_card(&t));
        let spec_file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let card_text = card::card_md(&card::CardInputs {
            entry,
            spec: &spec,
            estimate: &est,
            spec_file: &spec_file,
            overview: &overview,
        });
        files.push(GeneratedFile {
            path,
            contents: new_text,
        });
        files.push(GeneratedFile {
            path: card_path,
            contents: card_text,
        });
        models.push(GeneratedModel {
            entry: entry.clone(),
            spec,
            estimate: est,
            previous_mb,
            card: card::card_path(Path::new(&entry.spec)),
        });
    }
    files.push(GeneratedFile {
        path: root.join(MEMORY_SPECS_FILE),
        contents: render_memory_specs(&models),
    });
    Ok((files, models))
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MB as f64)
}

fn provenance_summary(spec: &ModelSpec) -> String {
    let mut kinds: Vec<String> = spec
        .components
        .iter()
        .map(|c| format!("{} {}", c.name, c.weights.provenance))
        .collect();
    kinds.dedup();
    kinds.join("; ")
}

/// A relative path as a markdown link target (always `/`).
fn card_link(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Renders MEMORY_SPECS.md.
pub fn render_memory_specs(models: &[GeneratedModel]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<!-- generated by `cargo xtask gen-memory-specs` from model-cards/**/*.toml; do not edit -->"
    );
    let _ = writeln!(s, "# Memory specs\n");
    let _ = writeln!(
        s,
        "`est_memory_allocation_mb` is the peak resident memory to load a model and serve one request of its \
         default run profile on its default device: weights as loaded + KV cache + activations + runtime \
         overhead, plus a margin, rounded **up** to the next 100 MB. 1 MB = 1,048,576 bytes. Every part is \
         below in MB; the facts behind them (with their provenance) are in each model's spec TOML, \
         and each model's name links its card. Estimator version {}.\n",
        crate::ESTIMATOR_VERSION
    );
    let _ = writeln!(
        s,
        "| Model | Registry key | Memory MB | Quantization | Source |"
    );
    let _ = writeln!(s, "|---|---|---:|---|---|");
    let mut total = 0u64;
    for m in models {
        total += m.estimate.est_memory_allocation_mb;
        let _ = writeln!(
            s,
            "| [{}]({}) | `{}` | {} | {} | {} |",
            m.spec.name,
            card_link(&m.card),
            m.entry.key.get_ref(),
            m.estimate.est_memory_allocation_mb,
            m.entry.quantization,
            provenance_summary(&m.spec)
        );
    }
    let _ = writeln!(s, "| **Total** | | **{total}** | | |\n");

    let _ = writeln!(s, "## Breakdown (MB)\n");
    let _ = writeln!(
        s,
        "| Model | Run profile | Weights | KV cache | Activations | Overhead | Margin | Sum | Memory MB |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for m in models {
        let e = &m.estimate;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} ({} %) | {} | {} |",
            m.spec.name,
            m.entry.profile.summary(),
            mb(e.weights_bytes),
            mb(e.kv_cache_bytes),
            mb(e.activations_bytes),
            mb(e.overhead_bytes),
            mb(e.margin_bytes),
            m.entry.profile.margin_percent,
            mb(e.total_bytes),
            e.est_memory_allocation_mb
        );
    }
    let _ = writeln!(s, "\n## Components (weights as loaded)\n");
    let _ = writeln!(
        s,
        "| Model | Component | Stage | Files | Provenance | Weights MB | Working set MB |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---:|---:|");
    for m in models {
        for (c, b) in m.spec.components.iter().zip(&m.estimate.components) {
            let _ = writeln!(
                s,
                "| {} | {} | {:?} | {} | {} | {} | {} |",
                m.spec.name,
                c.name,
                c.stage,
                c.files.join(", "),
                c.weights.provenance,
                mb(b.weights_bytes),
                mb(b.activations_bytes)
            );
        }
    }
    let _ = writeln!(s, "\n## Compared with the original registry\n");
    let _ = writeln!(
        s,
        "| Model | Original MB | Ours MB | Ratio | Why they differ |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|");
    let mut orig_total = 0u64;
    for m in models {
        let ours = m.estimate.est_memory_allocation_mb;
        match m.entry.original_mb {
            Some(o) => {
                orig_total += o;
                let _ = writeln!(
                    s,
                    "| {} | {o} | {ours} | {:.2} | {} |",
                    m.spec.name,
                    ours as f64 / o.max(1) as f64,
                    m.entry.original_note.as_deref().unwrap_or("")
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "| {} | — | {ours} | — | not in the original registry |",
                    m.spec.name
                );
            }
        }
    }
    let _ = writeln!(s, "| **Total** | **{orig_total}** | **{total}** | | |\n");
    let _ = writeln!(s, "## How each part was computed\n");
    for m in models {
        let _ = writeln!(s, "- **{}**", m.spec.name);
        for n in &m.estimate.notes {
            let _ = writeln!(s, "  - {n}");
        }
    }
    s
}

/// Result of a `--check` run: the files whose contents differ from what would be generated.
pub fn stale_files(files: &[GeneratedFile]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|f| std::fs::read_to_string(&f.path).ok().as_deref() != Some(f.contents.as_str()))
        .map(|f| f.path.clone())
        .collect()
}

/// Writes `contents` to `path` atomically: a temp file beside it, then a rename, so a
/// failure never leaves a half-written file.
pub fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The checked-in registry plus what generation would produce (used by tests and xtask).
pub fn load_and_generate(root: &Path) -> Result<(Registry, Vec<GeneratedFile>), SpecError> {
    let (files, _) = generate(root)?;
    Ok((Registry::load(root)?, files))
}
