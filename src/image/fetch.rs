//! Fetching one image: streamed in chunks into a temporary file while SHA-256 is
//! computed over the same bytes, so an image is never held in memory and never read
//! twice; the result is usable only when its hash is the declared one.
//!
//! HTTP is `ureq` (a small, maintained, blocking client: fabrik needs one GET per
//! image, not an async stack); TLS through its default rustls with the webpki roots.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Where an image's bytes come from, as fabrik fetches them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `http://` or `https://`.
    Http(String),
    /// `file:<path>` (or `file://<path>`): a file on the machine that runs fabrik.
    File(PathBuf),
}

impl Source {
    /// The source of an image's `source` text; `None` for a path on the host itself,
    /// which fabrik does not fetch.
    pub fn parse(text: &str) -> Option<Source> {
        if text.starts_with("http://") || text.starts_with("https://") {
            return Some(Source::Http(text.to_string()));
        }
        let path = text.strip_prefix("file://").or_else(|| text.strip_prefix("file:"))?;
        Some(Source::File(PathBuf::from(path)))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http(url) => f.write_str(url),
            Source::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// A fetched, verified image: its bytes in `file` (removed when dropped).
#[derive(Debug)]
pub struct Fetched {
    pub file: tempfile::NamedTempFile,
    pub sha256: String,
    pub bytes: u64,
}

impl Fetched {
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot fetch image `{name}` from {from}: {message}")]
    Unreachable { name: String, from: String, message: String },
    #[error("image `{name}` from {from} does not match its sha256: declared {expected}, fetched {got} ({bytes} bytes)")]
    Mismatch { name: String, from: String, expected: String, got: String, bytes: u64 },
    #[error("cannot store image `{name}` while fetching it: {message}")]
    Local { name: String, message: String },
}

/// How long a fetch waits to connect, and for the response to begin (the body may take
/// as long as it takes: images are large).
const CONNECT: Duration = Duration::from_secs(30);
const READ: Duration = Duration::from_secs(60);
const CHUNK: usize = 256 * 1024;

/// Fetches image `name` from `source` into a temporary file (in `dir`, or the system's
/// temporary folder), checking it against `sha256` (hex, either case). `progress` is told
/// the bytes read so far and the total when the source says it.
pub fn fetch(
    name: &str,
    source: &Source,
    sha256: &str,
    dir: Option<&Path>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Fetched, FetchError> {
    let unreachable =
        |message: String| FetchError::Unreachable { name: name.into(), from: source.to_string(), message };
    let (reader, total): (Box<dyn Read>, Option<u64>) = match source {
        Source::Http(url) => {
            let config =
                ureq::Agent::config_builder().timeout_connect(Some(CONNECT)).timeout_recv_response(Some(READ)).build();
            let agent = ureq::Agent::new_with_config(config);
            let response = agent.get(url).call().map_err(|e| unreachable(e.to_string()))?;
            let (_, body) = response.into_parts();
            let total = body.content_length();
            (Box::new(body.into_reader()), total)
        }
        Source::File(path) => {
            let f = std::fs::File::open(path).map_err(|e| unreachable(e.to_string()))?;
            let total = f.metadata().ok().map(|m| m.len());
            (Box::new(f), total)
        }
    };
    stream(name, source, sha256, reader, total, dir, progress)
}

fn stream(
    name: &str,
    source: &Source,
    sha256: &str,
    mut reader: Box<dyn Read>,
    total: Option<u64>,
    dir: Option<&Path>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Fetched, FetchError> {
    let local = |e: std::io::Error| FetchError::Local { name: name.into(), message: e.to_string() };
    let builder = tempfile::Builder::new().prefix("fabrik-image-").tempfile_in(dir.unwrap_or(&std::env::temp_dir()));
    let mut file = builder.map_err(local)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Unreachable {
                    name: name.into(),
                    from: source.to_string(),
                    message: format!("after {bytes} bytes: {e}"),
                });
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(local)?;
        bytes += n as u64;
        progress(bytes, total);
    }
    file.flush().map_err(local)?;
    let got = crate::guest::volume::hex(&hasher.finalize());
    if !got.eq_ignore_ascii_case(sha256) {
        return Err(FetchError::Mismatch {
            name: name.into(),
            from: source.to_string(),
            expected: sha256.to_ascii_lowercase(),
            got,
            bytes,
        });
    }
    Ok(Fetched { file, sha256: got, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// Serves `body` to each of `times` GETs on loopback; the URL of the listener.
    fn serve(body: Vec<u8>, times: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/image.qcow2", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(times) {
                let mut stream = stream.unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
            }
        });
        url
    }

    fn sha(bytes: &[u8]) -> String {
        crate::guest::volume::hex(&Sha256::digest(bytes))
    }

    fn body() -> Vec<u8> {
        (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn an_image_over_http_streams_into_a_file_and_verifies() {
        let body = body();
        let url = serve(body.clone(), 1);
        let mut seen = Vec::new();
        let got = fetch("ubuntu", &Source::parse(&url).unwrap(), &sha(&body).to_uppercase(), None, &mut |n, t| {
            seen.push((n, t))
        })
        .unwrap();
        assert_eq!(std::fs::read(got.path()).unwrap(), body);
        assert_eq!((got.bytes, got.sha256.clone()), (body.len() as u64, sha(&body)));
        assert!(seen.len() > 1, "progress is told as it goes: {seen:?}");
        assert_eq!(seen.last(), Some(&(body.len() as u64, Some(body.len() as u64))));
    }

    #[test]
    fn a_wrong_checksum_is_refused_and_leaves_no_file() {
        let body = body();
        let url = serve(body.clone(), 1);
        let dir = tempfile::tempdir().unwrap();
        let e = fetch("ubuntu", &Source::parse(&url).unwrap(), &sha(b"other"), Some(dir.path()), &mut |_, _| {})
            .unwrap_err();
        assert!(matches!(e, FetchError::Mismatch { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains(&sha(b"other")) && text.contains(&sha(&body)) && text.contains(&url), "{text}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the partial image is removed");
    }

    #[test]
    fn an_unreachable_url_is_a_clear_error() {
        // A port that was just free: nothing listens on it.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/image.qcow2");
        let e = fetch("ubuntu", &Source::parse(&url).unwrap(), &sha(b""), None, &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, FetchError::Unreachable { .. }), "{e}");
        assert!(e.to_string().starts_with("cannot fetch image `ubuntu` from http://127.0.0.1:"), "{e}");
    }

    #[test]
    fn a_file_source_is_fetched_the_same_way() {
        let body = body();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.img");
        std::fs::write(&path, &body).unwrap();
        let source = Source::parse(&format!("file:{}", path.display())).unwrap();
        let got = fetch("base", &source, &sha(&body), None, &mut |_, _| {}).unwrap();
        assert_eq!(std::fs::read(got.path()).unwrap(), body);
        assert_eq!(Source::parse("/var/lib/images/base.img"), None, "a path on the host is not fetched");
    }
}
