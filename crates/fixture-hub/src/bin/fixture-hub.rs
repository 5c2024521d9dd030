//! Serves local checkpoint folders as Hub repositories on 127.0.0.1, for trying and measuring
//! downloads by hand (`HF_ENDPOINT=<printed url> candle-pool embed --model …`).
//!
//! Usage: `fixture-hub OWNER/NAME=DIR [OWNER/NAME=DIR …]`. Prints the URL, then serves until
//! killed; on stdin's end (or Ctrl-C) it prints the bytes of file bodies it sent.

use std::io::Read;

use fixture_hub::{FixtureHub, FixtureRepo};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("usage: fixture-hub OWNER/NAME=DIR [OWNER/NAME=DIR …]");
        std::process::exit(2);
    }
    let mut repos = Vec::new();
    for a in &args {
        let Some((id, dir)) = a.split_once('=') else {
            eprintln!("error: `{a}`: expected OWNER/NAME=DIR");
            std::process::exit(2);
        };
        match FixtureRepo::from_dir(id, dir, FixtureRepo::default_lfs) {
            Ok(r) => repos.push(r),
            Err(e) => {
                eprintln!("error: {dir}: {e}");
                std::process::exit(1);
            }
        }
    }
    let hub = FixtureHub::start(repos);
    println!("{}", hub.url);
    // Serve until stdin closes.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    eprintln!(
        "served {} requests, {} B of file bodies",
        hub.log().len(),
        hub.file_bytes_sent()
    );
}
