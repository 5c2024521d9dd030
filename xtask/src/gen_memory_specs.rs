//! `cargo xtask gen-memory-specs [--check]`.

use model_spec::specgen::{GeneratedModel, MEMORY_SPECS_FILE, generate, stale_files, write_atomic};
use std::path::Path;
use std::process::ExitCode;

pub fn run(cards: &Path, check: bool) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (files, models) = generate(cards)?;
    let stale = stale_files(&files);
    println!(
        "gen-memory-specs: {} models from {} (memory figures in MB of 1,048,576 B, estimator version {})\n",
        models.len(),
        display(cards, &cards.join(model_spec::LIST_FILE)),
        model_spec::ESTIMATOR_VERSION
    );
    print!("{}", table(&models));
    println!();
    if check {
        if stale.is_empty() {
            println!(
                "{} models, all generated files are up to date: the specs' [memory] tables, \
                 the cards and {}",
                models.len(),
                display(cards, &cards.join(MEMORY_SPECS_FILE))
            );
            return Ok(ExitCode::SUCCESS);
        }
        for p in &stale {
            let what = if p.exists() { "stale" } else { "missing" };
            eprintln!("{} is {what}", display(cards, p));
        }
        eprintln!("run `cargo xtask gen-memory-specs` and commit the result");
        return Ok(ExitCode::FAILURE);
    }
    // Every file is rendered before any is written, so a bad spec writes nothing.
    for f in files.iter().filter(|f| stale.contains(&f.path)) {
        write_atomic(&f.path, &f.contents)?;
        println!("wrote {}", display(cards, &f.path));
    }
    if stale.is_empty() {
        println!("everything was already up to date");
    }
    let dir = display(cards, cards);
    println!(
        "\ncards: {dir}/<capability>/<SLUG>.md ({} models, e.g. {dir}/{})",
        models.len(),
        models.first().map_or(String::new(), |m| slash(&m.card))
    );
    println!(
        "every part of every figure, with the original registry's: {}",
        display(cards, &cards.join(MEMORY_SPECS_FILE))
    );
    println!(
        "facts and [memory] tables: {dir}/<capability>/<slug>.toml (refresh from the Hub: `cargo xtask fetch-cards`)"
    );
    Ok(ExitCode::SUCCESS)
}

/// Model, capability, figure and its change against the figure the spec held before the run.
fn table(models: &[GeneratedModel]) -> String {
    let rows: Vec<[String; 4]> = models
        .iter()
        .map(|m| {
            let now = m.estimate.est_memory_allocation_mb;
            let change = match m.previous_mb {
                None => "new".to_owned(),
                Some(p) if p == now => "unchanged".to_owned(),
                Some(p) => format!("{:+} (was {p})", now as i64 - p as i64),
            };
            [
                m.entry.key.get_ref().clone(),
                m.entry.capability.to_string(),
                now.to_string(),
                change,
            ]
        })
        .collect();
    let head = ["model", "capability", "MB", "change"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |r: [&str; 4]| {
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        )
    };
    let mut out = line(head);
    for r in &rows {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3]]));
    }
    out
}

fn slash(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
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
