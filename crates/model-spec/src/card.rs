//! The model card, `model-cards/<capability>/<SLUG>.md`: a page for people, rendered from the
//! spec facts, the registry entry and the memory estimate.
//!
//! One renderer for both writers: `cargo xtask gen-memory-specs` renders every card offline
//! and keeps it current (`--check` reports a stale one); `cargo xtask fetch-cards` renders the
//! same card with the Overview taken from the model's Hub README. That Overview sits between
//! two marker comments, and gen-memory-specs keeps it as it is ([`Overview::from_card`]), so the
//! two commands agree byte for byte on every card.

use crate::estimate::{MB, MemoryEstimate};
use crate::list::ModelEntry;
use crate::spec::{Capability, Component, Fact, Family, Format, ModelSpec, Provenance, Stage};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the cards link to.
pub const HUB_URL: &str = "https://huggingface.co";

const OVERVIEW_START: &str = "<!-- overview: the Hub README at commit ";
const OVERVIEW_START_END: &str = ", written by `cargo xtask fetch-cards` -->";
const OVERVIEW_END: &str = "<!-- end of overview -->";

/// The card markdown beside a spec: `text_embedding/all-minilm-l6-v2.toml` →
/// `text_embedding/ALL-MINILM-L6-V2.md`.
pub fn card_path(spec_path: &Path) -> PathBuf {
    let stem = spec_path
        .file_stem()
        .map(|s| s.to_string_lossy().to_uppercase())
        .unwrap_or_default();
    spec_path.with_file_name(format!("{stem}.md"))
}

/// What the card's Overview section says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overview {
    /// Rendered offline: what the spec records and where each fact comes from.
    FromSpec,
    /// The opening of the model's Hub README (markdown, as fetch-cards rendered it).
    Hub {
        /// The commit the README was read at.
        commit: String,
        text: String,
    },
}

impl Overview {
    /// The Overview of an existing card: the Hub README text fetch-cards put there, kept as it
    /// is; anything else (no card, an offline card, a card edited out of shape) is rendered
    /// from the spec again.
    pub fn from_card(card: &str) -> Overview {
        let Some(start) = card.find(OVERVIEW_START) else {
            return Overview::FromSpec;
        };
        let rest = &card[start + OVERVIEW_START.len()..];
        let Some(line_end) = rest.find('\n') else {
            return Overview::FromSpec;
        };
        let Some(commit) = rest[..line_end].strip_suffix(OVERVIEW_START_END) else {
            return Overview::FromSpec;
        };
        let body = &rest[line_end + 1..];
        let Some(end) = body.find(&format!("\n{OVERVIEW_END}")) else {
            return Overview::FromSpec;
        };
        Overview::Hub {
            commit: commit.to_owned(),
            text: body[..end].to_owned(),
        }
    }
}

/// Everything a card is rendered from.
pub struct CardInputs<'a> {
    pub entry: &'a ModelEntry,
    /// The spec as generated (derived inventories refreshed).
    pub spec: &'a ModelSpec,
    pub estimate: &'a MemoryEstimate,
    /// The spec's file name (it sits beside the card).
    pub spec_file: &'a str,
    pub overview: &'a Overview,
}

fn cell(x: &str) -> String {
    x.replace('|', "\\|").replace('\n', " ")
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mb(b: u64) -> String {
    format!("{:.1}", b as f64 / MB as f64)
}

fn fact_text(f: &Fact) -> String {
    match &f.value {
        toml::Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

fn fact_origin(f: &Fact) -> &str {
    f.source.as_deref().or(f.formula.as_deref()).unwrap_or("")
}

/// `stage` as the spec writes it.
pub fn stage_name(st: Stage) -> &'static str {
    match st {
        Stage::Main => "main",
        Stage::TextEncoder => "text_encoder",
        Stage::Denoiser => "denoiser",
        Stage::Decoder => "decoder",
    }
}

/// `format` as the spec writes it.
pub fn format_name(f: Format) -> &'static str {
    match f {
        Format::Safetensors => "safetensors",
        Format::Gguf => "gguf",
    }
}

/// The Hub commit the facts were fetched at, when the spec pins one.
fn pinned_commit(spec: &ModelSpec) -> Option<&str> {
    match &spec.revision.value {
        toml::Value::String(s) if s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(s)
        }
        _ => None,
    }
}

fn capability_text(c: Capability) -> &'static str {
    match c {
        Capability::TextEmbedding => "text embedding",
        Capability::ImageEmbedding => "image and text embedding",
        Capability::TextToText => "text generation",
        Capability::Vision => "vision-language (image + text to text)",
        Capability::TextToImage => "text-to-image",
    }
}

fn is_mixture_of_experts(f: Family) -> bool {
    matches!(f, Family::Qwen3Moe | Family::Deepseek2)
}

fn serving(spec: &ModelSpec, key: &str) -> Option<String> {
    spec.serving.get(key).map(|f| fact_text(f.get_ref()))
}

/// `n thing` / `n things`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Every fact but the revision (the card's first line says whether that is pinned).
fn all_facts(spec: &ModelSpec) -> Vec<&Fact> {
    let mut v: Vec<&Fact> = Vec::new();
    v.extend(spec.serving.values().map(|f| f.get_ref()));
    for c in &spec.components {
        v.extend(c.architecture.values().map(|f| f.get_ref()));
        v.extend(c.weights.published_bytes.iter());
    }
    v
}

fn total_params(spec: &ModelSpec) -> u64 {
    spec.components
        .iter()
        .map(|c| c.weights.total_params())
        .sum()
}

/// Σ published sizes of the weight files the spec records, and how many components lack one.
fn published_weight_bytes(spec: &ModelSpec) -> (u64, usize) {
    let mut sum = 0;
    let mut missing = 0;
    for c in &spec.components {
        match c
            .weights
            .published_bytes
            .as_ref()
            .and_then(|f| f.value.as_integer())
        {
            Some(b) => sum += b as u64,
            None => missing += 1,
        }
    }
    (sum, missing)
}

fn weight_files(spec: &ModelSpec) -> Vec<&str> {
    let mut files: Vec<&str> = Vec::new();
    for c in &spec.components {
        for f in &c.files {
            if !files.contains(&f.as_str()) {
                files.push(f);
            }
        }
    }
    files
}

fn offline_overview(o: &mut String, c: &CardInputs) {
    let spec = c.spec;
    let key = spec.registry_key.get_ref();
    let families: Vec<String> = spec
        .components
        .iter()
        .map(|x| format!("`{}` ({})", x.name, x.family))
        .collect();
    let _ = writeln!(
        o,
        "{} by {} is a {} model in this registry: {} — {} — with {} parameters stored as {} \
         ({}).\n",
        spec.name,
        spec.provider,
        capability_text(spec.capability),
        count(spec.components.len(), "component", "components"),
        families.join(", "),
        thousands(total_params(spec)),
        c.entry.quantization,
        format_name(c.entry.format)
    );
    let mut limits = Vec::new();
    for (k, label) in [
        ("embedding_dim", "embedding dimension"),
        ("pooling", "pooling"),
        ("max_input_tokens", "max input tokens"),
        ("max_output_tokens", "max output tokens"),
        ("image_size", "image size"),
        ("default_steps", "default steps"),
    ] {
        if let Some(v) = serving(spec, k) {
            limits.push(format!("{label} {v}"));
        }
    }
    if !limits.is_empty() {
        let _ = writeln!(o, "Serving facts: {}.\n", limits.join(", "));
    }
    let facts = all_facts(spec);
    let by = |p: Provenance| facts.iter().filter(|f| f.provenance == p).count();
    let _ = writeln!(
        o,
        "This card was rendered offline by `cargo xtask gen-memory-specs` from the spec \
         [`{}`]({}): the Hub README was not read. The spec holds {} facts — {} fetched from the \
         Hub, {} recorded from the public sources below, {} derived by the formula each names — \
         and {}. `cargo xtask fetch-cards --models {key}` (with network) pins the Hub commit, \
         re-reads the facts and fills this section from the model's README.\n",
        c.spec_file,
        c.spec_file,
        facts.len(),
        by(Provenance::Fetched),
        by(Provenance::Recorded),
        by(Provenance::Derived),
        count(
            spec.components.len(),
            "tensor inventory",
            "tensor inventories"
        ),
    );
    // Each distinct source once, with how many facts it backs.
    let mut sources: BTreeMap<&str, usize> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    let weight_sources = spec
        .components
        .iter()
        .filter(|x| x.weights.provenance != Provenance::Derived)
        .filter_map(|x| x.weights.source.as_deref());
    let fact_sources = facts
        .iter()
        .filter(|f| f.provenance != Provenance::Derived)
        .filter_map(|f| f.source.as_deref());
    for s in fact_sources.chain(weight_sources) {
        if !sources.contains_key(s) {
            order.push(s);
        }
        *sources.entry(s).or_default() += 1;
    }
    if !order.is_empty() {
        let _ = writeln!(o, "Where the facts come from:\n");
        for s in order {
            let n = sources[s];
            let _ = writeln!(
                o,
                "- {} ({})",
                s.replace('\n', " "),
                count(n, "fact", "facts")
            );
        }
        o.push('\n');
    }
    let derived: Vec<&str> = spec
        .components
        .iter()
        .filter(|x| x.weights.provenance == Provenance::Derived)
        .map(|x| x.name.as_str())
        .collect();
    if !derived.is_empty() {
        let _ = writeln!(
            o,
            "The tensor inventor{} of {} {} derived from the architecture facts by \
             `model_spec::shapes` (Hugging Face / llama.cpp tensor names), not read from weight \
             headers.\n",
            if derived.len() == 1 { "y" } else { "ies" },
            derived
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if derived.len() == 1 { "is" } else { "are" }
        );
    }
}

fn arch_table(o: &mut String, comp: &Component) {
    let _ = writeln!(o, "| Fact | Value | Provenance | Source |");
    let _ = writeln!(o, "|---|---|---|---|");
    let mut keys: Vec<&String> = comp.architecture.keys().collect();
    let req = comp.family.required_keys();
    keys.sort_by_key(|k| (req.iter().position(|r| r == k).unwrap_or(usize::MAX), *k));
    for k in keys {
        let f = comp.architecture[k].get_ref();
        let _ = writeln!(
            o,
            "| `{k}` | {} | {} | {} |",
            cell(&fact_text(f)),
            f.provenance,
            cell(fact_origin(f))
        );
    }
}

fn inventory(o: &mut String, spec: &ModelSpec) {
    let _ = writeln!(o, "### Tensor inventory\n");
    for comp in &spec.components {
        let w = &comp.weights;
        let how = match w.provenance {
            Provenance::Derived => format!(
                "derived{}",
                w.formula
                    .as_deref()
                    .map_or(String::new(), |f| format!(": {f}"))
            ),
            p => format!(
                "{p}{}",
                w.source
                    .as_deref()
                    .map_or(String::new(), |s| format!(": {s}"))
            ),
        };
        let _ = writeln!(o, "- `{}`: {}", comp.name, how.replace('\n', " "));
    }
    o.push('\n');
    let _ = writeln!(
        o,
        "Bytes are exact (ggml block sizes for quantized types).\n\n\
         | Component | Type | Tensors | Parameters | Bytes | Note |\n|---|---|---:|---:|---:|---|"
    );
    let (mut tt, mut tp, mut tb) = (0, 0, 0);
    for comp in &spec.components {
        for r in &comp.weights.inventory {
            tt += r.tensors;
            tp += r.params;
            tb += r.bytes;
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                comp.name,
                r.dtype,
                thousands(r.tensors),
                thousands(r.params),
                thousands(r.bytes),
                r.name
                    .as_deref()
                    .map_or(String::new(), |n| format!("`{n}`"))
            );
        }
    }
    let _ = writeln!(
        o,
        "| **Total** | | **{}** | **{}** | **{}** | |\n",
        thousands(tt),
        thousands(tp),
        thousands(tb)
    );
    let (published, missing) = published_weight_bytes(spec);
    if published > 0 {
        let _ = writeln!(
            o,
            "The weight files are {} B as published (headers and alignment included){}.\n",
            thousands(published),
            if missing > 0 {
                format!(
                    "; {missing} component(s) share a file with another or have no recorded size"
                )
            } else {
                String::new()
            }
        );
    }
}

fn memory(o: &mut String, c: &CardInputs) {
    let e = c.estimate;
    let p = &c.entry.profile;
    let _ = writeln!(
        o,
        "`est_memory_allocation_mb` = **{}**: the peak resident memory to load the model and \
         serve one request of its default run profile on its default device, in MB of \
         1,048,576 B (estimator version {}). `cargo xtask gen-memory-specs` writes the same \
         figure into the spec's `[memory]` table and MEMORY_SPECS.md.\n",
        e.est_memory_allocation_mb,
        crate::ESTIMATOR_VERSION
    );
    let _ = writeln!(o, "Run profile: `{}`.\n", p.summary());
    let mut rows: Vec<(String, String)> = vec![("device".into(), p.device.to_string())];
    let mut opt = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            rows.push((k.to_owned(), v));
        }
    };
    opt(
        "load_dtype",
        p.load_dtype.map(|d| d.as_str().to_owned()).or(Some(
            "as stored (quantized tensors are never converted)".into(),
        )),
    );
    opt(
        "activation_dtype",
        p.activation_dtype.map(|d| d.as_str().to_owned()),
    );
    opt("batch", Some(p.batch.to_string()));
    opt("seq_len", p.seq_len.map(|n| n.to_string()));
    opt("context_tokens", p.context_tokens.map(|n| n.to_string()));
    opt("prompt_tokens", p.prompt_tokens.map(|n| n.to_string()));
    opt("kv_dtype", p.kv_dtype.map(|d| d.as_str().to_owned()));
    opt("image_size", p.image_size.map(|n| n.to_string()));
    opt("width", p.width.map(|n| n.to_string()));
    opt("height", p.height.map(|n| n.to_string()));
    opt("text_tokens", p.text_tokens.map(|n| n.to_string()));
    if c.spec.components.len() > 1 {
        opt("co_resident", Some(p.co_resident.to_string()));
    }
    if !p.dequantize_on_load.is_empty() {
        opt("dequantize_on_load", Some(p.dequantize_on_load.join(", ")));
    }
    if !p.skip_on_load.is_empty() {
        opt("skip_on_load", Some(p.skip_on_load.join(", ")));
    }
    opt("overhead_mb", p.overhead_mb.map(|n| n.to_string()));
    opt("margin_percent", Some(p.margin_percent.to_string()));
    let _ = writeln!(o, "| Profile field | Value |\n|---|---|");
    for (k, v) in rows {
        let _ = writeln!(o, "| `{k}` | {} |", cell(&v));
    }
    o.push('\n');

    let _ = writeln!(o, "| Part | Bytes | MB |\n|---|---:|---:|");
    for (label, b) in [
        ("weights (as loaded)", e.weights_bytes),
        ("kv_cache", e.kv_cache_bytes),
        ("activations", e.activations_bytes),
        ("overhead", e.overhead_bytes),
    ] {
        let _ = writeln!(o, "| {label} | {} | {} |", thousands(b), mb(b));
    }
    let _ = writeln!(
        o,
        "| margin ({} %) | {} | {} |",
        p.margin_percent,
        thousands(e.margin_bytes),
        mb(e.margin_bytes)
    );
    let _ = writeln!(
        o,
        "| total | {} | {} |",
        thousands(e.total_bytes),
        mb(e.total_bytes)
    );
    let _ = writeln!(
        o,
        "| **figure (rounded up to 100 MB)** | | **{}** |\n",
        e.est_memory_allocation_mb
    );
    if e.components.len() > 1 {
        let _ = writeln!(
            o,
            "| Component | Stage | Weights MB | Working set MB |\n|---|---|---:|---:|"
        );
        for b in &e.components {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                b.name,
                stage_name(b.stage),
                mb(b.weights_bytes),
                mb(b.activations_bytes)
            );
        }
        o.push('\n');
    }
    let _ = writeln!(o, "How each part was computed:\n");
    for n in &e.notes {
        let _ = writeln!(o, "- {n}");
    }
    o.push('\n');
    let _ = writeln!(o, "### Compared with the original registry\n");
    match c.entry.original_mb {
        Some(orig) => {
            let _ = writeln!(
                o,
                "The original registry shipped **{orig} MB**; this figure is {} MB ({:.2}×). {}\n",
                e.est_memory_allocation_mb,
                e.est_memory_allocation_mb as f64 / orig.max(1) as f64,
                c.entry
                    .original_note
                    .as_deref()
                    .map_or(String::new(), |n| format!("Why: {n}."))
            );
        }
        None => {
            let _ = writeln!(o, "The original registry had no figure for this model.\n");
        }
    }
}

fn performance(o: &mut String, c: &CardInputs) {
    let spec = c.spec;
    let e = c.estimate;
    let p = &c.entry.profile;
    let _ = writeln!(
        o,
        "The spec records no throughput; these are the sizes that bound it at the default run \
         profile (`{}`):\n",
        p.summary()
    );
    let moe = spec
        .components
        .iter()
        .any(|x| is_mixture_of_experts(x.family));
    let _ = writeln!(
        o,
        "- {} parameters; {} MB of weights as loaded.",
        thousands(total_params(spec)),
        mb(e.weights_bytes)
    );
    match spec.capability {
        Capability::TextToText | Capability::Vision => {
            let _ = writeln!(
                o,
                "- Each generated token reads {} of the loaded weights once: decoding is bound by \
                 memory bandwidth.",
                if moe {
                    "the shared weights and the routed experts' share"
                } else {
                    "all"
                }
            );
            if let Some(ctx) = p.context_tokens.filter(|n| *n > 0) {
                let per_token = e.kv_cache_bytes / (ctx * p.batch.max(1));
                let _ = writeln!(
                    o,
                    "- KV cache: {} B per token of context ({} MB at {ctx} tokens).",
                    thousands(per_token),
                    mb(e.kv_cache_bytes)
                );
            }
            if let Some(n) = p.prompt_tokens {
                let _ = writeln!(
                    o,
                    "- Prefill in chunks of {n} tokens needs {} MB of activations.",
                    mb(e.activations_bytes)
                );
            }
        }
        Capability::TextEmbedding | Capability::ImageEmbedding => {
            let _ = writeln!(
                o,
                "- One forward pass per batch; its working set is {} MB of activations at the \
                 profile's batch and length.",
                mb(e.activations_bytes)
            );
        }
        Capability::TextToImage => {
            let steps = serving(spec, "default_steps").unwrap_or_else(|| "the default".into());
            let _ = writeln!(
                o,
                "- {steps} denoising steps per image; the largest working set is {} MB.",
                mb(e.activations_bytes)
            );
        }
    }
    if spec
        .components
        .iter()
        .any(|x| x.family == Family::Bert && x.format == Format::Safetensors)
    {
        let _ = writeln!(
            o,
            "- On the CPU in F32 this model runs on the workspace's own encoder kernels; the \
             throughput measured against sentence-transformers is in the workspace README \
             (“Encoder speed”)."
        );
    }
    o.push('\n');
}

fn usage_notes(c: &CardInputs) -> Vec<String> {
    let spec = c.spec;
    let key = spec.registry_key.get_ref();
    let p = &c.entry.profile;
    let mut notes = vec![format!(
        "Look the model up by its registry key `{key}`; the pool admits it when {} MB are free on `{}` (the figure under Memory Requirements).",
        c.estimate.est_memory_allocation_mb, p.device
    )];
    let serving = |k: &str| serving(spec, k);
    match spec.capability {
        Capability::TextEmbedding => {
            if let Some(n) = serving("max_input_tokens") {
                notes.push(format!("Inputs longer than {n} tokens are truncated."));
            }
            if let Some(d) = serving("embedding_dim") {
                let pool = serving("pooling").unwrap_or_else(|| "the card's".into());
                notes.push(format!("Embeddings have {d} dimensions ({pool} pooling)."));
            }
        }
        Capability::TextToText => {
            if let Some(n) = serving("max_input_tokens") {
                notes.push(format!(
                    "Context window {n} tokens; the memory figure assumes {} tokens of context.",
                    p.context_tokens.unwrap_or(0)
                ));
            }
        }
        Capability::TextToImage => notes.push(format!(
            "The memory figure is for {}×{} images with every component {}.",
            p.width.unwrap_or(0),
            p.height.unwrap_or(0),
            if p.co_resident {
                "resident at once"
            } else {
                "loaded only for its stage"
            }
        )),
        Capability::ImageEmbedding | Capability::Vision => {
            if let Some(i) = p.image_size {
                notes.push(format!("Images are resized to {i}×{i} pixels."));
            }
        }
    }
    if let Some(l) = &spec.license {
        notes.push(format!(
            "License `{l}`: check it before shipping the weights."
        ));
    }
    let files = weight_files(spec);
    let (published, _) = published_weight_bytes(spec);
    notes.push(format!(
        "Weights: {} from the Hub repo{}{}; this registry never downloads them.",
        count(files.len(), "file", "files"),
        match pinned_commit(spec) {
            Some(sha) => format!(" at commit `{}`", &sha[..12]),
            None => String::new(),
        },
        if published > 0 {
            format!(", {} B", thousands(published))
        } else {
            String::new()
        }
    ));
    notes
}

fn serving_table(o: &mut String, spec: &ModelSpec) {
    if spec.serving.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "Serving facts (what the pool reads from the registry):\n\n\
         | Fact | Value | Provenance | Source |\n|---|---|---|---|"
    );
    for (k, f) in &spec.serving {
        let f = f.get_ref();
        let _ = writeln!(
            o,
            "| `{k}` | {} | {} | {} |",
            cell(&fact_text(f)),
            f.provenance,
            cell(fact_origin(f))
        );
    }
    o.push('\n');
}

/// The card markdown.
pub fn card_md(c: &CardInputs) -> String {
    let spec = c.spec;
    let key = spec.registry_key.get_ref();
    let base = HUB_URL;
    let commit = pinned_commit(spec);
    let mut o = String::new();
    match c.overview {
        Overview::FromSpec => {
            let _ = writeln!(
                o,
                "<!-- generated by `cargo xtask gen-memory-specs` from {}; do not edit -->",
                c.spec_file
            );
        }
        Overview::Hub { commit, .. } => {
            let _ = writeln!(
                o,
                "<!-- generated by `cargo xtask fetch-cards` from {key} at commit {commit} and kept current by `cargo xtask gen-memory-specs` from {}; do not edit -->",
                c.spec_file
            );
        }
    }
    let _ = writeln!(o, "# {}\n", spec.name);
    let revision = match commit {
        Some(sha) => format!("revision [`{}`]({base}/{key}/tree/{sha})", &sha[..12]),
        None => format!(
            "revision not pinned (`{}`: recorded facts)",
            fact_text(&spec.revision)
        ),
    };
    let _ = writeln!(
        o,
        "`{key}` · {} · {} · {} · license {}\n",
        spec.capability,
        c.entry.quantization,
        revision,
        spec.license
            .as_deref()
            .map_or("not stated".into(), |l| format!("`{l}`"))
    );

    let _ = writeln!(o, "## Overview\n");
    match c.overview {
        Overview::FromSpec => offline_overview(&mut o, c),
        Overview::Hub { commit, text } => {
            let _ = writeln!(o, "{OVERVIEW_START}{commit}{OVERVIEW_START_END}");
            let _ = writeln!(o, "{text}");
            let _ = writeln!(o, "{OVERVIEW_END}\n");
        }
    }

    let _ = writeln!(o, "## Architecture\n");
    for comp in &spec.components {
        let _ = writeln!(
            o,
            "### `{}` — {} ({}, stage {})\n",
            comp.name,
            comp.family,
            format_name(comp.format),
            stage_name(comp.stage)
        );
        let _ = writeln!(o, "Files: {}.\n", {
            let f: Vec<String> = comp.files.iter().map(|f| format!("`{f}`")).collect();
            f.join(", ")
        });
        arch_table(&mut o, comp);
        o.push('\n');
    }
    inventory(&mut o, spec);

    let _ = writeln!(o, "## Memory Requirements\n");
    memory(&mut o, c);

    let _ = writeln!(o, "## Performance\n");
    performance(&mut o, c);

    let _ = writeln!(o, "## Usage Notes\n");
    for n in usage_notes(c) {
        let _ = writeln!(o, "- {n}");
    }
    o.push('\n');
    serving_table(&mut o, spec);

    let _ = writeln!(o, "## Links\n");
    let _ = writeln!(o, "- Model page: <{base}/{key}>");
    let rev = commit.unwrap_or("main");
    let _ = writeln!(o, "- Files at `{rev}`: <{base}/{key}/tree/{rev}>");
    let _ = writeln!(
        o,
        "- Model card at `{rev}`: <{base}/{key}/blob/{rev}/README.md>"
    );
    let _ = writeln!(o, "- Facts: [`{}`]({})", c.spec_file, c.spec_file);
    let _ = writeln!(
        o,
        "- Every model's memory figure: [MEMORY_SPECS.md](../MEMORY_SPECS.md)"
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_path_is_the_upper_case_stem() {
        assert_eq!(
            card_path(Path::new("a/text_embedding/all-minilm-l6-v2.toml")),
            Path::new("a/text_embedding/ALL-MINILM-L6-V2.md")
        );
    }

    #[test]
    fn a_hub_overview_is_read_back_exactly() {
        let text = "### Title\nLine | with bar\n\n<!-- a comment -->\nend";
        let mut card = String::from("<!-- generated -->\n# X\n\n## Overview\n\n");
        card.push_str(&format!("{OVERVIEW_START}{}{OVERVIEW_START_END}\n", "ab12"));
        card.push_str(text);
        card.push_str(&format!("\n{OVERVIEW_END}\n\n## Architecture\n"));
        assert_eq!(
            Overview::from_card(&card),
            Overview::Hub {
                commit: "ab12".into(),
                text: text.into()
            }
        );
        assert_eq!(Overview::from_card("# offline card\n"), Overview::FromSpec);
        let unterminated = format!("{OVERVIEW_START}ab12{OVERVIEW_START_END}\ntext\n");
        assert_eq!(Overview::from_card(&unterminated), Overview::FromSpec);
    }
}
