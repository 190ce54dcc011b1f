//! Images for real, on the twins (`--sim`): an image with a URL and a `sha256` is fetched
//! by apply on this machine (here from an HTTP server on loopback, never the internet),
//! checked, and written into its volume on every host before any VM uses it; a wrong
//! checksum fails the apply before anything is created.

use std::io::{BufRead, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

mod common;
use common::{copy_dir, text};

const AMD64: &str = "/var/lib/fabrik/images/noble-server-cloudimg-amd64.img";

/// Serves `body` to every GET on loopback, from a thread; the image's URL.
fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/noble-server-cloudimg-amd64.img", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
        }
    });
    url
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The example with its amd64 image fetched from `url`, declared with `sha256`.
fn factory(dir: &Path, url: &str, sha256: &str) -> PathBuf {
    let f = dir.join("factory");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ai-factory"), &f);
    let storage = f.join("storage.yaml");
    let text = std::fs::read_to_string(&storage).unwrap();
    assert!(text.contains(AMD64), "the example's image moved");
    let text = text.replacen(AMD64, &format!("{url}\n    sha256: {sha256}"), 1);
    std::fs::write(&storage, text).unwrap();
    f
}

fn fabrik(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabrik"))
        .args(args)
        .arg(dir.join("factory"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("NO_COLOR", "1")
        // Each test its own image cache: one test's fetch must not serve another's.
        .env("FABRIK_IMAGE_CACHE", dir.join("image-cache"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn image_on(dir: &Path, host: &str) -> PathBuf {
    fabrik::sim::virt::content_path(&dir.join("state").join(host), "images", "ubuntu-24.04")
}

fn body() -> Vec<u8> {
    (0..700_000u32).map(|i| (i % 253) as u8).collect()
}

#[test]
fn apply_fetches_verifies_and_writes_the_image_on_every_host() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = body();
    let url = serve(body.clone());
    factory(d, &url, &hex(&body));

    let o = fabrik(&["plan", "--sim", "--format", "json"], d);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let actions = common::all(&plan, "actions");
    let action = actions.as_array().unwrap().iter().find(|a| a["id"] == "volume:gpu01/images/ubuntu-24.04");
    let ops = action.unwrap_or_else(|| panic!("no image volume in {plan}"))["ops"].as_array().unwrap();
    let upload = ops.iter().find(|s| s["op"] == "upload-image").expect("an upload-image op");
    assert_eq!((upload["source"].as_str(), upload["sha256"].as_str()), (Some(url.as_str()), Some(hex(&body).as_str())));

    let o = fabrik(&["apply", "--sim", "--yes"], d);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("fetched 1 image(s), 700000 bytes"), "{}", text(&o));
    for host in ["fe01", "gpu01", "gpu02"] {
        let got = std::fs::read(image_on(d, host)).unwrap_or_else(|e| panic!("no image on {host}: {e}"));
        assert!(got == body, "{host}'s image is the fetched one");
    }
}

#[test]
fn a_wrong_checksum_fails_the_apply_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = body();
    let url = serve(body.clone());
    factory(d, &url, &hex(b"not the image"));

    let o = fabrik(&["apply", "--sim", "--yes"], d);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("does not match its sha256") && out.contains(&hex(&body)), "{out}");
    assert!(out.contains("nothing was applied"), "{out}");
    // Nothing was created on any twin: no image, no VM.
    assert!(!image_on(d, "gpu01").exists());
    let o = fabrik(&["inventory", "--sim", "--format", "json"], d);
    let inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    for h in inv["hosts"].as_array().unwrap() {
        let domains = h["live"]["domains"].as_array().map_or(0, Vec::len);
        let volumes: usize = h["live"]["pools"]
            .as_array()
            .map_or(0, |p| p.iter().map(|p| p["volumes"].as_array().map_or(0, Vec::len)).sum());
        assert_eq!((domains, volumes), (0, 0), "{} was changed: {h}", h["name"]);
    }

    // An unreachable URL is refused the same way.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = tempfile::tempdir().unwrap();
    factory(dead.path(), &format!("http://127.0.0.1:{port}/gone.img"), &hex(&body));
    let o = fabrik(&["apply", "--sim", "--yes"], dead.path());
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("cannot fetch image `ubuntu-24.04`"), "{}", text(&o));
}

/// A fetched image is kept in the image cache under its SHA-256: the next apply that
/// needs it (here a fresh set of twins, with the server gone) reads it from there. A
/// damaged cache file is never used: it is fetched again, which here fails cleanly.
#[test]
fn a_fetched_image_is_kept_in_the_cache_and_a_damaged_one_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = body();
    let sha = hex(&body);
    // A server that answers once, then is gone.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/noble-server-cloudimg-amd64.img", listener.local_addr().unwrap());
    let served = body.clone();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", served.len());
        let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&served));
    });
    factory(d, &url, &sha);
    let o = fabrik(&["apply", "--sim", "--yes"], d);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("fetched 1 image(s), 700000 bytes"), "{}", text(&o));
    server.join().unwrap();
    let cached = d.join("image-cache").join(&sha);
    assert!(std::fs::read(&cached).unwrap() == body, "the cache holds the verified image under its hash");

    // New twins need the image again; the server is gone, the cache has it.
    std::fs::remove_dir_all(d.join("state")).unwrap();
    let o = fabrik(&["apply", "--sim", "--yes"], d);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1 image(s), 700000 bytes, from the image cache"), "{}", text(&o));
    assert!(!text(&o).contains("fetched 1 image"), "{}", text(&o));
    assert!(std::fs::read(image_on(d, "gpu01")).unwrap() == body);

    // A damaged cache file is dropped and the image fetched again: unreachable now.
    std::fs::remove_dir_all(d.join("state")).unwrap();
    std::fs::write(&cached, b"damaged").unwrap();
    let o = fabrik(&["apply", "--sim", "--yes"], d);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("cannot fetch image `ubuntu-24.04`"), "{}", text(&o));
    assert!(!cached.exists(), "the damaged file is still in the cache");
    assert!(!image_on(d, "gpu01").exists(), "a damaged image was written");
}
