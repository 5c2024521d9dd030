//! `write-fixtures DIR`: one tiny random-weight checkpoint of every backend the pool serves,
//! and `DIR/fixtures.json` (`[{"key", "family", "capability", "path"}]`). `cargo xtask
//! fixtures DIR` runs it.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!(
            "usage: write-fixtures DIR\n  writes a tiny checkpoint of every backend and DIR/fixtures.json"
        );
        return ExitCode::FAILURE;
    };
    let dir = PathBuf::from(dir);
    match model_fixtures::manifest::write_all(&dir) {
        Ok(fixtures) => {
            for f in &fixtures {
                println!(
                    "{:<18} {:<16} {}",
                    f.key,
                    f.capability,
                    dir.join(&f.path).display()
                );
            }
            println!(
                "wrote {}",
                dir.join(model_fixtures::manifest::MANIFEST).display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
