//! `cargo xtask gen-memory-specs [--check]`.

use model_spec::specgen::{generate, stale_files, write_atomic};
use std::path::Path;
use std::process::ExitCode;

pub fn run(cards: &Path, check: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (files, models) = generate(cards)?;
    let stale = stale_files(&files);
    if check {
        if stale.is_empty() {
            println!(
                "gen-memory-specs: {} models, all generated files are up to date",
                models.len()
            );
            return Ok(ExitCode::SUCCESS);
        }
        for p in &stale {
            eprintln!("{} is stale", display(cards, p));
        }
        eprintln!("run `cargo xtask gen-memory-specs` and commit the result");
        return Ok(ExitCode::FAILURE);
    }
    for f in files.iter().filter(|f| stale.contains(&f.path)) {
        write_atomic(&f.path, &f.contents)?;
        println!("wrote {}", display(cards, &f.path));
    }
    for m in &models {
        println!(
            "{:>8} MB  {}",
            m.estimate.est_memory_allocation_mb,
            m.entry.key.get_ref()
        );
    }
    if stale.is_empty() {
        println!("everything was already up to date");
    }
    Ok(ExitCode::SUCCESS)
}

/// `model-cards/…` relative to the cards folder's parent, for readable messages.
fn display(cards: &Path, p: &Path) -> String {
    let base = cards.parent().unwrap_or(cards);
    let rel = p.strip_prefix(base).unwrap_or(p);
    rel.components()
        .filter(|c| !matches!(c, std::path::Component::ParentDir))
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
