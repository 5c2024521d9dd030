//! The pictures in docs/ are what `cargo xtask plan` draws today, and they are valid SVG.

use model_plan::size::GIB;
use model_plan::{BudgetPolicy, GpuKind, Machine, PlanRequest, plan, svg};
use std::path::Path;

/// (file, title, machine, the command that made it; docs/planner.md shows the same commands).
fn examples() -> Vec<(&'static str, &'static str, Machine, &'static str)> {
    vec![
        (
            "docs/plan-laptop-24gib.svg",
            "24 GiB laptop, no GPU",
            Machine::with_ram(24 * GIB),
            "cargo xtask plan --ram 24GiB --no-gpu --title '24 GiB laptop, no GPU' --svg docs/plan-laptop-24gib.svg",
        ),
        (
            "docs/plan-workstation-128gib-24gib-gpu.svg",
            "Workstation: 128 GiB RAM + 24 GiB GPU",
            Machine::with_ram(128 * GIB).gpu(GpuKind::Cuda, 24 * GIB),
            "cargo xtask plan --ram 128GiB --vram 24GiB --title 'Workstation: 128 GiB RAM + 24 GiB GPU' --svg docs/plan-workstation-128gib-24gib-gpu.svg",
        ),
    ]
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn example_pictures_are_up_to_date() {
    let registry = model_spec::Registry::load(&root().join("model-cards")).unwrap();
    for (file, title, machine, command) in examples() {
        let p = plan(
            &registry,
            &machine,
            &BudgetPolicy::default(),
            &PlanRequest::default(),
        )
        .unwrap();
        let want = svg::render(&p, title, Some(command));
        let have = std::fs::read_to_string(root().join(file)).unwrap_or_default();
        assert!(have == want, "{file} is stale: run `{command}` and commit");
        assert_well_formed(&want);
        for m in &p.models {
            assert!(want.contains(&m.name), "{file} names {}", m.name);
        }
    }
}

/// Tags nest and close, attributes are quoted, and the file is one `<svg>` element.
fn assert_well_formed(svg: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    let mut roots = 0;
    while let Some(start) = rest.find('<') {
        let text = &rest[..start];
        assert!(!text.contains('>'), "stray `>` in text: {text:?}");
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;"].contains(&entity),
                "bad entity {entity:?}"
            );
        }
        rest = &rest[start..];
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").expect("comment closes");
            assert!(!after[..end].contains("--"), "`--` inside a comment");
            rest = &after[end + 3..];
            continue;
        }
        let end = rest.find('>').expect("tag closes");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "closing tag");
            continue;
        }
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        let name = tag.split_whitespace().next().unwrap().trim_end_matches('/');
        if stack.is_empty() {
            roots += 1;
            assert_eq!(name, "svg");
        }
        if !tag.ends_with('/') {
            stack.push(name.to_owned());
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(roots, 1);
}
