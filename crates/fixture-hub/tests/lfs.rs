//! LFS files served the Hub's way (listing, CDN redirect, ranges, corruption), checked with
//! plain HTTP/1.1 requests over `TcpStream`.

use fixture_hub::{Body, Fault, FixtureHub, FixtureRepo};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection; the body is read up to `Content-Length` (none for HEAD).
fn request(hub: &FixtureHub, method: &str, path_or_url: &str, headers: &[(&str, &str)]) -> Reply {
    let path = path_or_url.strip_prefix(&hub.url).unwrap_or(path_or_url);
    let host = hub.url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(host).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = reply
        .header("Content-Length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    if method != "HEAD" {
        reply.body = vec![0; len];
        r.read_exact(&mut reply.body).unwrap();
    }
    reply
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const REPO: &str = "org/tiny";

/// `model.safetensors`: LFS, 4 KiB of which only 32 bytes are stored; `config.json`: plain.
fn hub() -> (FixtureHub, Vec<u8>) {
    let prefix: Vec<u8> = (1..=32).collect();
    let mut full = prefix.clone();
    full.resize(4096, 0);
    let repo = FixtureRepo::new(REPO)
        .file("model.safetensors", Body::sparse_lfs(prefix, 4096))
        .file("config.json", Body::bytes(&b"{\"hidden_size\": 8}"[..]));
    (FixtureHub::start(vec![repo]), full)
}

fn tree(hub: &FixtureHub) -> Vec<serde_json::Value> {
    let r = request(
        hub,
        "GET",
        &format!("/api/models/{REPO}/tree/main?recursive=true"),
        &[],
    );
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).unwrap()
}

fn entry<'a>(tree: &'a [serde_json::Value], path: &str) -> &'a serde_json::Value {
    tree.iter().find(|e| e["path"] == path).unwrap()
}

#[test]
fn lfs_tree_entry_has_the_sha256_of_the_full_content() {
    let (hub, full) = hub();
    let t = tree(&hub);
    let e = entry(&t, "model.safetensors");
    let sha = sha256_hex(&full);
    assert_eq!(e["type"], "file");
    assert_eq!(e["size"], 4096);
    assert_eq!(e["lfs"]["oid"], sha.as_str());
    assert_eq!(e["lfs"]["size"], 4096);
    // "version …\n" (43) + "oid sha256:<64>\n" (76) + "size 4096\n" (10).
    assert_eq!(e["lfs"]["pointerSize"], 129);
    let oid = e["oid"].as_str().unwrap();
    assert_eq!(oid.len(), 40);
    assert_ne!(oid, &sha[..40]);

    let c = entry(&t, "config.json");
    assert!(c.get("lfs").is_none());
    assert_eq!(c["oid"].as_str().unwrap().len(), 40);
    assert_ne!(c["oid"], e["oid"]);

    // The same content under another path lists the same oids.
    let b = hub.body(REPO, "model.safetensors").unwrap();
    assert_eq!(b.sha256(), sha);
    assert_eq!(b.to_vec(), full);
    assert_eq!(
        Body::lfs(full.clone()).git_oid(),
        b.git_oid(),
        "sparse and dense forms of one content"
    );
    assert_ne!(Body::bytes(full).git_oid(), b.git_oid());
}

#[test]
fn resolve_of_an_lfs_file_redirects_to_the_cdn() {
    let (hub, full) = hub();
    let sha = sha256_hex(&full);
    let oid = entry(&tree(&hub), "model.safetensors")["oid"]
        .as_str()
        .unwrap()
        .to_owned();
    for method in ["HEAD", "GET"] {
        let r = request(
            &hub,
            method,
            &format!("/{REPO}/resolve/main/model.safetensors"),
            &[],
        );
        assert_eq!(r.status, 302, "{method}");
        assert_eq!(
            r.header("Location").unwrap(),
            format!("{}/cdn/{sha}", hub.url)
        );
        assert!(
            r.header("Location")
                .unwrap()
                .starts_with("http://127.0.0.1:")
        );
        assert_eq!(r.header("X-Repo-Commit").unwrap(), hub.sha(REPO));
        assert_eq!(r.header("X-Linked-Etag").unwrap(), format!("\"{sha}\""));
        assert_eq!(r.header("X-Linked-Size").unwrap(), "4096");
        assert_eq!(r.header("ETag").unwrap(), format!("\"{oid}\""));
        assert_eq!(r.header("Content-Length").unwrap(), "0");
        assert!(r.body.is_empty());
    }

    let head = request(&hub, "HEAD", &format!("/cdn/{sha}"), &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length").unwrap(), "4096");
    let get = request(&hub, "GET", &format!("{}/cdn/{sha}", hub.url), &[]);
    assert_eq!(get.status, 200);
    assert_eq!(get.body, full);
    assert_eq!(hub.requests_matching("/cdn/"), 2);
    assert_eq!(hub.body_bytes_sent(), 4096 + tree_bytes(&hub));
    assert_eq!(hub.bytes_sent_matching("/cdn/"), 4096);

    let missing = request(&hub, "GET", &format!("/cdn/{}", "0".repeat(64)), &[]);
    assert_eq!(missing.status, 404);
}

fn tree_bytes(hub: &FixtureHub) -> u64 {
    hub.bytes_sent_matching("/tree/")
}

#[test]
fn cdn_ranges_answer_206() {
    let (hub, full) = hub();
    let sha = sha256_hex(&full);
    let r = request(
        &hub,
        "GET",
        &format!("/cdn/{sha}"),
        &[("Range", "bytes=3-9")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range").unwrap(), "bytes 3-9/4096");
    assert_eq!(r.body, &full[3..10]);
    assert_eq!(hub.body_bytes_sent(), 7);

    // A range reaching into the zeros, and a suffix range.
    let r = request(
        &hub,
        "GET",
        &format!("/cdn/{sha}"),
        &[("Range", "bytes=30-")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &full[30..]);
    let r = request(
        &hub,
        "GET",
        &format!("/cdn/{sha}"),
        &[("Range", "bytes=-5")],
    );
    assert_eq!(r.header("Content-Range").unwrap(), "bytes 4091-4095/4096");
    assert_eq!(r.body, [0; 5]);
}

#[test]
fn faults_on_the_file_path_reach_its_cdn_download() {
    let (hub, full) = hub();
    let cdn = format!("/cdn/{}", sha256_hex(&full));
    hub.fault(Fault::IgnoreRange {
        path: "model.safetensors".into(),
    });
    let r = request(&hub, "GET", &cdn, &[("Range", "bytes=3-9")]);
    assert_eq!((r.status, r.body.len()), (200, 4096));
    hub.clear_faults();

    hub.fault(Fault::Status {
        path: "org/tiny/model.safetensors".into(),
        method: Some("GET"),
        status: 503,
        times: Some(1),
    });
    assert_eq!(request(&hub, "GET", &cdn, &[]).status, 503);
    assert_eq!(request(&hub, "GET", &cdn, &[]).status, 200);
    hub.clear_faults();

    // Faults on `/resolve/` stay on the resolve path.
    hub.fault(Fault::status("/resolve/", 404));
    assert_eq!(request(&hub, "GET", &cdn, &[]).status, 200);
}

#[test]
fn corrupt_changes_the_bytes_but_not_the_advertised_sha() {
    let (hub, full) = hub();
    let sha = sha256_hex(&full);
    hub.fault(Fault::Corrupt {
        path: "model.safetensors".into(),
    });
    let t = tree(&hub);
    assert_eq!(entry(&t, "model.safetensors")["lfs"]["oid"], sha.as_str());
    let r = request(
        &hub,
        "HEAD",
        &format!("/{REPO}/resolve/main/model.safetensors"),
        &[],
    );
    assert_eq!(r.header("X-Linked-Etag").unwrap(), format!("\"{sha}\""));

    let got = request(&hub, "GET", r.header("Location").unwrap(), &[]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), full.len());
    assert_ne!(got.body, full);
    assert_ne!(sha256_hex(&got.body), sha);
    assert_eq!(got.body[0], full[0] ^ 0xff);
    assert_eq!(got.body[1..], full[1..]);

    let ranged = request(
        &hub,
        "GET",
        &format!("/cdn/{sha}"),
        &[("Range", "bytes=3-9")],
    );
    assert_eq!(ranged.body[0], full[3] ^ 0xff);

    // Plain files too.
    hub.fault(Fault::Corrupt {
        path: "config.json".into(),
    });
    let c = request(
        &hub,
        "GET",
        &format!("/{REPO}/resolve/main/config.json"),
        &[],
    );
    assert_eq!(c.body[0], b'{' ^ 0xff);
}

#[test]
fn truncate_on_the_file_path_cuts_the_cdn_body() {
    let (hub, full) = hub();
    hub.fault(Fault::Truncate {
        path: "model.safetensors".into(),
        keep: 100,
    });
    let host = hub.url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /cdn/{} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        sha256_hex(&full)
    )
    .unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("Content-Length: 4096"), "{text}");
    let body_start = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(all.len() - body_start, 100);
    assert_eq!(hub.body_bytes_sent(), 100);
}

#[test]
fn plain_files_are_served_directly() {
    let (hub, _) = hub();
    let oid = entry(&tree(&hub), "config.json")["oid"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/{REPO}/resolve/main/config.json");
    let r = request(&hub, "GET", &path, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"{\"hidden_size\": 8}");
    assert_eq!(r.header("ETag").unwrap(), format!("\"{oid}\""));
    assert_eq!(r.header("X-Repo-Commit").unwrap(), hub.sha(REPO));
    assert!(r.header("Location").is_none());
    assert!(r.header("X-Linked-Etag").is_none());

    let r = request(&hub, "GET", &path, &[("Range", "bytes=2-7")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"hidden");
    assert_eq!(hub.requests_matching("config.json"), 2);
}

#[test]
fn from_dir_walks_a_folder_and_marks_lfs_files() {
    let dir = std::env::temp_dir().join(format!("fixture-hub-from-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("1_Pooling/sub")).unwrap();
    std::fs::write(dir.join("config.json"), b"{}").unwrap();
    std::fs::write(dir.join("model.safetensors"), b"weights").unwrap();
    std::fs::write(dir.join("1_Pooling/config.json"), b"{\"p\":1}").unwrap();
    std::fs::write(dir.join("1_Pooling/sub/big.txt"), vec![7u8; 300]).unwrap();

    let repo = FixtureRepo::from_dir("org/dir", &dir, |p, size| {
        FixtureRepo::default_lfs(p, size) || size > 200
    })
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let files: Vec<_> = repo
        .files
        .iter()
        .map(|(p, b)| (p.as_str(), b.size(), b.is_lfs()))
        .collect();
    assert_eq!(
        files,
        [
            ("1_Pooling/config.json", 7, false),
            ("1_Pooling/sub/big.txt", 300, true),
            ("config.json", 2, false),
            ("model.safetensors", 7, true),
        ]
    );
    assert_eq!(repo.files["model.safetensors"].prefix(), b"weights");

    let hub = FixtureHub::start(vec![repo]);
    let r = request(
        &hub,
        "HEAD",
        "/org/dir/resolve/main/1_Pooling/sub/big.txt",
        &[],
    );
    assert_eq!(r.status, 302);
    let got = request(&hub, "GET", r.header("Location").unwrap(), &[]);
    assert_eq!(got.body, vec![7u8; 300]);
}

#[test]
fn default_lfs_rule() {
    assert!(FixtureRepo::default_lfs("model.safetensors", 10));
    assert!(FixtureRepo::default_lfs("q/model-Q4_K_M.gguf", 10));
    assert!(FixtureRepo::default_lfs("tokenizer.json", 11_000_000));
    assert!(!FixtureRepo::default_lfs("tokenizer.json", 7_000_000));
    assert!(!FixtureRepo::default_lfs("README.md", 100));
}

#[test]
fn a_declared_sha256_is_listed_without_hashing() {
    // A petabyte: hashing it would never finish.
    let sha = "ab".repeat(32);
    let huge = Body::sparse_lfs(b"x".to_vec(), 1 << 50).declared_sha256(&sha);
    let hub = FixtureHub::start(vec![FixtureRepo::new(REPO).file("model.safetensors", huge)]);
    let e = entry(&tree(&hub), "model.safetensors").clone();
    assert_eq!(e["lfs"]["oid"], sha.as_str());
    assert_eq!(e["size"], 1u64 << 50);
    let r = request(
        &hub,
        "HEAD",
        &format!("/{REPO}/resolve/main/model.safetensors"),
        &[],
    );
    assert_eq!(r.header("X-Linked-Size").unwrap(), (1u64 << 50).to_string());
    let r = request(
        &hub,
        "GET",
        r.header("Location").unwrap(),
        &[("Range", "bytes=0-1")],
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &b"x\0"[..]));
}
