//! The compile-time contract: what makes a model's memory figure refuse to compile.
//!
//! Every check recomputes from the spec's facts through `model-spec` (the same estimator and
//! fingerprint `cargo xtask gen-memory-specs` uses), so a hand edit of either the figure or the
//! facts is caught. Each failure is one [`Diagnostic`] naming the model, the field and the fix.

use model_spec::estimate::loaded_weight_bytes;
use model_spec::shapes::DeriveError;
use model_spec::{LoadedSpec, MB, MemoryEstimate, MemorySection, ModelSpec, RunProfile, SpecError};
use std::fmt;

/// What to do about a stale or hand-edited memory figure.
pub const FIX: &str = "run `cargo xtask gen-memory-specs`";

/// Where a spec comes from, as the user should read it in an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A spec file, named relative to the workspace (registry) or as written (macro).
    File(String),
    /// A spec written inline in a `candle_model!` declaration of this static.
    Inline(String),
}

impl Origin {
    /// `file:line`, or `inline spec of `X`, line n`.
    pub fn at(&self, line: Option<usize>) -> String {
        match (self, line) {
            (Origin::File(f), Some(l)) => format!("{f}:{l}"),
            (Origin::File(f), None) => f.clone(),
            (Origin::Inline(s), Some(l)) => format!("inline spec of `{s}`, line {l}"),
            (Origin::Inline(s), None) => format!("inline spec of `{s}`"),
        }
    }
}

/// One reason a model does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Registry key, when the spec got far enough to name one.
    pub model: Option<String>,
    /// `file:line` of the offending value.
    pub location: String,
    /// Dotted field name, e.g. `est_memory_allocation_mb`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.model {
            // Model diagnostics read like "model `k` (file:line): est_memory_allocation_mb =
            // 0 is …": the message starts with the field.
            Some(model) => write!(f, "model `{model}` ({}): {}", self.location, self.message)?,
            // `(file)`, `(document)`: the whole file is at fault, not a field.
            None if self.field.starts_with('(') => {
                write!(f, "{}: {}", self.location, self.message)?
            }
            None => write!(
                f,
                "{}: field `{}`: {}",
                self.location, self.field, self.message
            )?,
        }
        if let Some(fix) = &self.fix {
            write!(f, "; {fix}")?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// A spec that failed to parse or validate (`model-spec` already located it).
    pub fn from_spec_error(e: &SpecError, origin: &Origin) -> Self {
        Diagnostic {
            model: None,
            location: origin.at(e.line),
            field: e.field.clone(),
            message: e.message.clone(),
            fix: e.fix.clone(),
        }
    }

    fn memory(spec: &LoadedSpec, origin: &Origin, field: &str, message: String) -> Self {
        let key = field.rsplit('.').next().unwrap_or(field);
        Diagnostic {
            model: Some(spec.spec.registry_key.get_ref().clone()),
            location: origin.at(line_of_key(spec, key)),
            field: field.to_owned(),
            message,
            fix: Some(FIX.to_owned()),
        }
    }
}

/// Line on which `key = …` is written (the first one; `[memory]` keys are unique).
fn line_of_key(spec: &LoadedSpec, key: &str) -> Option<usize> {
    spec.text
        .lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / MB as f64)
}

/// The spec as `cargo xtask gen-memory-specs` sees it: `derived` tensor inventories are
/// re-derived from the architecture facts (as `model_spec::specgen::regenerate_spec` does), so
/// a changed layer count changes the weights here too, not only the fingerprint.
pub fn with_derived_inventories(
    spec: &ModelSpec,
    profile: &RunProfile,
) -> Result<ModelSpec, DeriveError> {
    model_spec::specgen::with_derived_inventories(spec, profile)
}

/// Weights alone as the loader holds them, recomputed from the inventory: all components for
/// co-resident models, the largest one for staged ones (never more than that is held).
pub fn weights_as_loaded(spec: &ModelSpec, profile: &RunProfile) -> u64 {
    let per: Vec<u64> = spec
        .components
        .iter()
        .map(|c| loaded_weight_bytes(c, profile))
        .collect();
    if profile.co_resident {
        per.iter().sum()
    } else {
        per.into_iter().max().unwrap_or(0)
    }
}

fn weights_phrase(profile: &RunProfile) -> String {
    match profile.load_dtype {
        Some(d) => format!("as loaded in {d}"),
        None => "as loaded".to_owned(),
    }
}

/// Checks the `[memory]` table of one spec against its facts.
///
/// In order: the figure is present, not zero, a multiple of 100; it was computed for this run
/// profile and these facts (fingerprint), so edited facts read as "stale" with the new
/// estimate; it is not below the weights as loaded; it and every part equal the estimate.
///
/// `profile` is the run profile the figure must have been computed for: the `models.toml`
/// entry's for registry models (`from_list = true`), the spec's own `[memory.profile]` for a
/// `candle_model!` spec. Returns the (valid) memory section.
pub fn check_memory<'s>(
    spec: &'s LoadedSpec,
    origin: &Origin,
    profile: Option<&RunProfile>,
) -> Result<&'s MemorySection, Diagnostic> {
    let diag = |field: &str, message: String| Diagnostic::memory(spec, origin, field, message);
    let Some(mem) = &spec.spec.memory else {
        return Err(diag(
            "est_memory_allocation_mb",
            "est_memory_allocation_mb is missing: the spec has no [memory] table".to_owned(),
        ));
    };
    let from_list = profile.is_some();
    let profile = profile.unwrap_or(&mem.profile);
    let current = with_derived_inventories(&spec.spec, profile).map_err(|e| {
        let field = format!("component.{}.architecture.{}", e.component, e.field);
        let mut d = diag(
            &field,
            format!("est_memory_allocation_mb cannot be recomputed: {e}"),
        );
        d.location = origin.at(line_of_key(spec, &e.field));
        d
    })?;
    let estimate = model_spec::estimate(&current, profile);
    let expected = |e: &Result<MemoryEstimate, _>| match e {
        Ok(e) => format!(
            "; the estimate for these facts is {} MB",
            e.est_memory_allocation_mb
        ),
        Err(_) => String::new(),
    };
    let mb_figure = mem.est_memory_allocation_mb;
    if mb_figure == 0 {
        return Err(diag(
            "est_memory_allocation_mb",
            format!(
                "est_memory_allocation_mb = 0 cannot hold any model{}",
                expected(&estimate)
            ),
        ));
    }
    if mb_figure % 100 != 0 {
        return Err(diag(
            "est_memory_allocation_mb",
            format!(
                "est_memory_allocation_mb = {mb_figure} is not a multiple of 100 (figures are \
                 rounded up to the next 100 MB){}",
                expected(&estimate)
            ),
        ));
    }
    if from_list && mem.profile != *profile {
        let (was, now) = (mem.profile.summary(), profile.summary());
        let change = if was == now {
            "models.toml now gives a different one".to_owned()
        } else {
            format!("models.toml now says `{now}`")
        };
        return Err(diag(
            "memory.profile",
            format!(
                "est_memory_allocation_mb = {mb_figure} is stale: it was computed for the run \
                 profile `{was}`, but {change}{}",
                expected(&estimate)
            ),
        ));
    }
    let weights = weights_as_loaded(&current, profile);
    let now = model_spec::fingerprint(&current, profile);
    if now != mem.fingerprint {
        let outcome = match &estimate {
            Ok(e) if e.est_memory_allocation_mb == mb_figure => format!(
                "; the figure stays {mb_figure} MB for these facts, but its [memory] table must \
                 be rewritten"
            ),
            _ if mb_figure.saturating_mul(MB) < weights => format!(
                "{}, and the weights alone are now {} {}",
                expected(&estimate),
                mb(weights),
                weights_phrase(profile)
            ),
            other => expected(other),
        };
        return Err(diag(
            "memory.fingerprint",
            format!(
                "est_memory_allocation_mb = {mb_figure} is stale: the facts it was computed \
                 from (architecture, weights, serving values or run profile) changed since \
                 `cargo xtask gen-memory-specs` last ran (fingerprint {} recorded, {now} \
                 now){outcome}",
                mem.fingerprint,
            ),
        ));
    }
    if mb_figure.saturating_mul(MB) < weights {
        return Err(diag(
            "est_memory_allocation_mb",
            format!(
                "est_memory_allocation_mb = {mb_figure} is below its weights ({} {}){}",
                mb(weights),
                weights_phrase(profile),
                expected(&estimate)
            ),
        ));
    }
    let estimate = estimate.map_err(|e| {
        diag(
            &format!("memory.profile.{}", e.field),
            format!(
                "est_memory_allocation_mb cannot be recomputed: {}",
                e.message
            ),
        )
    })?;
    if estimate.est_memory_allocation_mb != mb_figure {
        return Err(diag(
            "est_memory_allocation_mb",
            format!(
                "est_memory_allocation_mb = {mb_figure} does not match the estimate for these \
                 facts ({} MB)",
                estimate.est_memory_allocation_mb
            ),
        ));
    }
    let parts = [
        ("weights_bytes", mem.weights_bytes, estimate.weights_bytes),
        (
            "kv_cache_bytes",
            mem.kv_cache_bytes,
            estimate.kv_cache_bytes,
        ),
        (
            "activations_bytes",
            mem.activations_bytes,
            estimate.activations_bytes,
        ),
        (
            "overhead_bytes",
            mem.overhead_bytes,
            estimate.overhead_bytes,
        ),
        ("margin_bytes", mem.margin_bytes, estimate.margin_bytes),
        ("total_bytes", mem.total_bytes, estimate.total_bytes),
    ];
    for (name, stored, now) in parts {
        if stored != now {
            return Err(diag(
                &format!("memory.{name}"),
                format!(
                    "memory.{name} = {stored} does not match the estimate for these facts \
                     ({now}), so est_memory_allocation_mb = {mb_figure} cannot be trusted"
                ),
            ));
        }
    }
    Ok(mem)
}

/// Refuses two models with the same registry key. `models` is `(key, where)`, `where` naming
/// the declaration (`file:line`); returns one diagnostic per repetition, located at it.
pub fn check_unique_keys(models: &[(&str, String)]) -> Vec<(usize, Diagnostic)> {
    let mut out = Vec::new();
    for (i, (key, at)) in models.iter().enumerate() {
        if let Some((_, first)) = models[..i].iter().find(|(k, _)| k == key) {
            out.push((
                i,
                Diagnostic {
                    model: None,
                    location: at.clone(),
                    field: "registry_key".to_owned(),
                    message: format!("duplicate registry key `{key}`, already declared by {first}"),
                    fix: Some("each model appears once; remove or rename one".to_owned()),
                },
            ));
        }
    }
    out
}
