//! Base images from outside the factory's hosts: fetched on the machine that runs fabrik
//! (an `http(s)://` URL, or a `file:` path here), hashed as they stream into a temporary
//! file, and checked against the image's declared `sha256` before any host is touched.

pub mod fetch;

pub use fetch::{FetchError, Fetched, Source, fetch};

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::plan::Plan;
use crate::plan::ops::{Step, StorageOp};

/// The images a plan writes, fetched and verified, kept until the apply is done.
#[derive(Debug, Default)]
pub struct Prepared {
    fetched: Vec<Fetched>,
}

impl Prepared {
    pub fn is_empty(&self) -> bool {
        self.fetched.is_empty()
    }

    /// How many images were fetched, and their bytes in all.
    pub fn totals(&self) -> (usize, u64) {
        (self.fetched.len(), self.fetched.iter().map(|f| f.bytes).sum())
    }
}

/// Fetches every image the plan writes (each source and hash once), checks each against
/// its `sha256`, and points the plan's uploads at the verified files. Runs before any
/// host step: an image that cannot be fetched or does not match fails here, and
/// nothing is created. `progress` is told the image, bytes so far and the total.
pub fn prepare(plan: &mut Plan, progress: &mut dyn FnMut(&str, u64, Option<u64>)) -> Result<Prepared, FetchError> {
    let mut files: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    let mut prepared = Prepared::default();
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
            let got = fetch(name, &from, sha256, None, &mut |n, t| progress(name, n, t))?;
            let path = got.path().to_path_buf();
            files.insert(key, path.clone());
            *file = Some(path);
            prepared.fetched.push(got);
        }
    }
    Ok(prepared)
}
