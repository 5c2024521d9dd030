//! Semantic checks on a parsed spec: everything serde cannot express.

use crate::error::SpecError;
use crate::list::{ModelEntry, check_repo_id};
use crate::spec::{Fact, LoadedSpec, Provenance, SCHEMA_VERSION};
use std::collections::{BTreeMap, HashSet};
use toml::Spanned;

fn check_fact(s: &LoadedSpec, field: &str, f: &Spanned<Fact>) -> Result<(), SpecError> {
    let fact = f.get_ref();
    let missing = match fact.provenance {
        Provenance::Recorded if fact.source.as_deref().is_none_or(str::is_empty) => Some("source"),
        Provenance::Derived if fact.formula.as_deref().is_none_or(str::is_empty) => Some("formula"),
        _ => None,
    };
    if let Some(what) = missing {
        return Err(s
            .error_at(
                Some(f.span()),
                field,
                format!("a {} fact must name its {what}", fact.provenance),
            )
            .fix(format!("add `{what} = \"…\"` to the fact")));
    }
    Ok(())
}

fn check_facts(
    s: &LoadedSpec,
    prefix: &str,
    map: &BTreeMap<String, Spanned<Fact>>,
) -> Result<(), SpecError> {
    for (k, f) in map {
        check_fact(s, &format!("{prefix}.{k}"), f)?;
    }
    Ok(())
}

/// Validates a spec on its own (no list needed).
pub fn validate_spec(s: &LoadedSpec) -> Result<(), SpecError> {
    let spec = &s.spec;
    if spec.schema_version != SCHEMA_VERSION {
        return Err(SpecError::new(
            &s.path,
            "schema_version",
            format!(
                "schema_version {} is not supported (expected {SCHEMA_VERSION})",
                spec.schema_version
            ),
        )
        .at(s.line_containing("schema_version")));
    }
    check_repo_id(spec.registry_key.get_ref())
        .map_err(|m| s.error_at(Some(spec.registry_key.span()), "registry_key", m))?;
    if spec.components.is_empty() {
        return Err(
            SpecError::new(&s.path, "component", "the spec lists no components")
                .fix("add a [[component]] table with the model's weights"),
        );
    }
    check_facts(s, "serving", &spec.serving)?;
    let mut names = HashSet::new();
    for (i, c) in spec.components.iter().enumerate() {
        let at = s.line_containing(&format!("name = \"{}\"", c.name));
        let field = |f: &str| format!("component[{i}].{f}");
        if !names.insert(c.name.as_str()) {
            return Err(SpecError::new(
                &s.path,
                field("name"),
                format!("duplicate component `{}`", c.name),
            )
            .at(at));
        }
        if c.files.is_empty() {
            return Err(SpecError::new(&s.path, field("files"), "lists no weight files").at(at));
        }
        for key in c.family.required_keys() {
            if !c.architecture.contains_key(*key) {
                return Err(SpecError::new(
                    &s.path,
                    field(&format!("architecture.{key}")),
                    format!(
                        "missing architecture value `{key}` required by family `{}`",
                        c.family
                    ),
                )
                .at(at)
                .fix(format!(
                    "add `{key} = {{ value = …, provenance = \"…\", source = \"config.json\" }}`"
                )));
            }
        }
        check_facts(s, &field("architecture"), &c.architecture)?;
        for (r, row) in c.weights.inventory.iter().enumerate() {
            let expect = row.dtype.bytes_for(row.params);
            if expect != Some(row.bytes) {
                let line = s.line_containing(&format!("bytes = {}", row.bytes));
                return Err(SpecError::new(
                    &s.path,
                    field(&format!("weights.inventory[{r}].bytes")),
                    format!(
                        "{} params of {} take {} bytes, not {}",
                        row.params,
                        row.dtype,
                        expect.map_or("a non-whole number of blocks".into(), |b| b.to_string()),
                        row.bytes
                    ),
                )
                .at(line));
            }
        }
    }
    Ok(())
}

/// Checks that a spec agrees with its `models.toml` entry.
pub fn check_against_entry(s: &LoadedSpec, entry: &ModelEntry) -> Result<(), SpecError> {
    if s.spec.registry_key.get_ref() != entry.key.get_ref() {
        return Err(s
            .error_at(
                Some(s.spec.registry_key.span()),
                "registry_key",
                format!(
                    "is `{}` but models.toml lists this file for `{}`",
                    s.spec.registry_key.get_ref(),
                    entry.key.get_ref()
                ),
            )
            .fix("make the two agree"));
    }
    if s.spec.capability != entry.capability {
        return Err(SpecError::new(
            &s.path,
            "capability",
            format!(
                "is `{}` but models.toml says `{}` for `{}`",
                s.spec.capability,
                entry.capability,
                entry.key.get_ref()
            ),
        )
        .at(s.line_containing("capability")));
    }
    Ok(())
}
