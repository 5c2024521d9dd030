//! Rust names for registry models.

/// `UPPER_SNAKE` static name from a registry key's repo name:
/// `sentence-transformers/all-MiniLM-L6-v2` → `ALL_MINILM_L6_V2`,
/// `black-forest-labs/FLUX.1-schnell` → `FLUX_1_SCHNELL`.
pub fn static_name(registry_key: &str) -> String {
    let repo = registry_key.rsplit('/').next().unwrap_or(registry_key);
    let mut out = String::with_capacity(repo.len());
    for c in repo.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_uppercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    // Keys are validated as Hub repo ids (they start with a letter or digit); a leading digit
    // still needs a prefix to be an identifier.
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "MODEL_");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::static_name;

    #[test]
    fn names_follow_the_repo_name() {
        let cases = [
            ("sentence-transformers/all-MiniLM-L6-v2", "ALL_MINILM_L6_V2"),
            ("dunzhang/stella_en_1.5B_v5", "STELLA_EN_1_5B_V5"),
            ("black-forest-labs/FLUX.1-schnell", "FLUX_1_SCHNELL"),
            ("microsoft/phi-4", "PHI_4"),
            ("someone/3d--model_", "MODEL_3D_MODEL"),
        ];
        for (key, name) in cases {
            assert_eq!(static_name(key), name, "{key}");
        }
    }
}
