//! Base images from outside the factory's hosts: fetched on the machine that runs fabrik
//! (an `http(s)://` URL, or a `file:` path here), hashed as they stream into a temporary
//! file, and checked against the image's declared `sha256` before any host is touched.
//!
//! A verified image fetched from a URL is kept in a cache on that machine, named by its SHA-256
//! ([`cache_dir`]): a later apply that writes the same image (to another host, or after
//! its volume was deleted) reads it from there instead of fetching it again. A cached
//! file is hashed again before each use, so a damaged one is fetched anew, never used.

pub mod fetch;

pub use fetch::{FetchError, Fetched, Source, fetch};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::plan::Plan;
use crate::plan::ops::{Step, StorageOp};

/// The images a plan writes, fetched and verified, kept until the apply is done.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Fetched now; a temporary file each when there is no cache.
    fetched: Vec<(u64, Option<Fetched>)>,
    /// Read from the cache, verified: how many, and their bytes.
    cached: (usize, u64),
}

impl Prepared {
    pub fn is_empty(&self) -> bool {
        self.fetched.is_empty() && self.cached.0 == 0
    }

    /// How many images were fetched, and their bytes in all.
    pub fn totals(&self) -> (usize, u64) {
        (self.fetched.len(), self.fetched.iter().map(|(bytes, _)| bytes).sum())
    }

    /// How many images came from the cache, and their bytes in all.
    pub fn cached(&self) -> (usize, u64) {
        self.cached
    }
}

/// Where verified images are kept between applies: `$FABRIK_IMAGE_CACHE`, else
/// `$XDG_CACHE_HOME/fabrik/images`, else `~/.cache/fabrik/images`; `None` without any
/// (then every apply fetches). Nothing is evicted: delete the folder to reclaim it.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("FABRIK_IMAGE_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("fabrik/images")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/fabrik/images")))
}

/// [`prepare_with`] the default [`cache_dir`].
pub fn prepare(plan: &mut Plan, progress: &mut dyn FnMut(&str, u64, Option<u64>)) -> Result<Prepared, FetchError> {
    prepare_with(plan, cache_dir().as_deref(), progress)
}

/// Fetches every image the plan writes (each source and hash once), checks each against
/// its `sha256`, and points the plan's uploads at the verified files. Runs before any
/// host step: an image that cannot be fetched or does not match fails here, and
/// nothing is created. `progress` is told the image, bytes so far and the total. With a
/// `cache`, an image already there under its hash is used from there (after hashing it
/// again), and one fetched is kept there.
pub fn prepare_with(
    plan: &mut Plan,
    cache: Option<&Path>,
    progress: &mut dyn FnMut(&str, u64, Option<u64>),
) -> Result<Prepared, FetchError> {
    let mut files: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    let mut prepared = Prepared::default();
    let cache = cache.filter(|dir| std::fs::create_dir_all(dir).is_ok());
    for action in &mut plan.actions {
        for step in &mut action.ops {
            let Step::Storage(StorageOp::UploadImage { name, source, sha256, file, .. }) = step else { continue };
            let key = (source.clone(), sha256.clone());
            if let Some(path) = files.get(&key) {
                *file = Some(path.clone());
                continue;
            }
            let Some(from) = Source::parse(source) else {
                return Err(FetchError::Unreachable {
                    name: name.clone(),
                    from: source.clone(),
                    message: "not a URL or `file:` source".into(),
                });
            };
            // A `file:` source is on this machine already: a copy would only double it.
            let cache = match from {
                Source::Http(_) => cache,
                Source::File(_) => None,
            };
            let cached = cache.map(|dir| dir.join(sha256.to_ascii_lowercase()));
            if let Some(path) = &cached
                && let Some(bytes) = verified(path, sha256)
            {
                files.insert(key, path.clone());
                *file = Some(path.clone());
                prepared.cached.0 += 1;
                prepared.cached.1 += bytes;
                continue;
            }
            let got = fetch(name, &from, sha256, cache, &mut |n, t| progress(name, n, t))?;
            let bytes = got.bytes;
            let (path, kept) = match cached {
                // Renamed within the cache's folder (the temporary file was made there):
                // the cache never holds a file that was not verified whole.
                Some(path) => match got.file.persist(&path) {
                    Ok(_) => (path, None),
                    Err(e) => {
                        let got = Fetched { file: e.file, sha256: got.sha256, bytes };
                        (got.path().to_path_buf(), Some(got))
                    }
                },
                None => (got.path().to_path_buf(), Some(got)),
            };
            files.insert(key, path.clone());
            *file = Some(path);
            prepared.fetched.push((bytes, kept));
        }
    }
    Ok(prepared)
}

/// The size of the cached file at `path` when its bytes hash to `sha256`; a file that
/// does not is removed (it will be fetched again).
fn verified(path: &Path, sha256: &str) -> Option<u64> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(_) => return None,
        }
    }
    if crate::guest::volume::hex(&hasher.finalize()).eq_ignore_ascii_case(sha256) {
        Some(bytes)
    } else {
        let _ = std::fs::remove_file(path);
        None
    }
}
