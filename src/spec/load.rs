//! Loading a factory: find its files, parse each with its front end, decode, merge.

use std::path::{Path, PathBuf};

use super::decode::Decoder;
use super::model::{self, Spec};
use super::source::{FileId, SourceFile, Sources, Span, Syntax};
use super::{kdl, yaml};
use crate::diag::Diagnostic;

/// A loaded factory: its files, what they declare, and what was wrong with them.
#[derive(Debug)]
#[must_use]
pub struct Loaded {
    pub sources: Sources,
    pub spec: Spec,
    pub diags: Vec<Diagnostic>,
}

/// Loads a factory from a file or a directory (every `*.yaml`, `*.yml`, `*.kdl` below it,
/// hidden entries skipped, in path order).
pub fn load(path: &Path) -> Loaded {
    let mut diags = Vec::new();
    let files = match discover(path) {
        Ok(files) => files,
        Err(d) => {
            return Loaded { sources: Sources::default(), spec: Spec::default(), diags: vec![d] };
        }
    };
    if files.is_empty() {
        diags.push(
            Diagnostic::error("fabrik::load::no-files", format!("no factory files in `{}`", path.display()))
                .help("a factory is a `.yaml`, `.yml` or `.kdl` file, or a directory that holds some"),
        );
    }
    let mut sources = Sources::default();
    let mut spec = Spec::default();
    for (path, syntax) in files {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                diags.push(
                    Diagnostic::error("fabrik::load::io", format!("cannot read `{}`: {e}", path.display()))
                        .help("check that the file exists and is readable"),
                );
                continue;
            }
        };
        let (_, file_spec, file_diags) = load_bytes(&mut sources, path, syntax, bytes);
        diags.extend(file_diags);
        spec.merge(file_spec, &mut diags);
    }
    Loaded { sources, spec, diags }
}

/// Parses and decodes one file's bytes, adding it to `sources`.
pub fn load_bytes(
    sources: &mut Sources,
    path: PathBuf,
    syntax: Syntax,
    bytes: Vec<u8>,
) -> (FileId, Spec, Vec<Diagnostic>) {
    let (text, bad_utf8_at) = match String::from_utf8(bytes) {
        Ok(t) => (t, None),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            (String::from_utf8_lossy(e.as_bytes()).into_owned(), Some(at))
        }
    };
    let id = sources.add(SourceFile::new(path, syntax, text));
    let file = sources.get(id);
    if let Some(at) = bad_utf8_at {
        let d = Diagnostic::error("fabrik::spec::not-utf8", "file is not UTF-8 text")
            .at(Span::new(id, at, at + 1), "first byte that is not UTF-8")
            .help("factory files are UTF-8 text; is this a binary file, or saved in another encoding?");
        return (id, Spec::default(), vec![d]);
    }
    let root = match syntax {
        Syntax::Yaml => yaml::parse(id, file).map_err(|d| vec![d]),
        Syntax::Kdl => kdl::parse(id, file),
    };
    let root = match root {
        Ok(Some(root)) => root,
        Ok(None) => {
            let d = Diagnostic::error("fabrik::spec::empty-file", "file is empty")
                .at(Span::new(id, 0, 0), "nothing here")
                .help(format!(
                    "a factory file starts with `version: {v}` (YAML) or `version {v}` (KDL); remove the file if it is not needed",
                    v = model::VERSION
                ));
            return (id, Spec::default(), vec![d]);
        }
        Err(diags) => return (id, Spec::default(), diags),
    };
    let mut d = Decoder::new(syntax);
    let spec = model::decode_file(&mut d, &root);
    (id, spec, d.diags)
}

fn discover(path: &Path) -> Result<Vec<(PathBuf, Syntax)>, Diagnostic> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Diagnostic::error("fabrik::load::io", format!("cannot read `{}`: {e}", path.display()))
            .help("give the path of a factory file or of a directory of them")
    })?;
    if meta.is_file() {
        let syntax = Syntax::of(path).ok_or_else(|| {
            Diagnostic::error(
                "fabrik::load::unknown-extension",
                format!("`{}` is not a `.yaml`, `.yml` or `.kdl` file", path.display()),
            )
            .help("name factory files `*.yaml`, `*.yml` or `*.kdl`")
        })?;
        return Ok(vec![(path.to_path_buf(), syntax)]);
    }
    let mut out = Vec::new();
    walk(path, &mut out).map_err(|e| {
        Diagnostic::error("fabrik::load::io", format!("cannot read directory `{}`: {e}", path.display()))
            .help("check the directory's permissions")
    })?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, Syntax)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Symbolic links to directories are not followed: they could loop.
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&path, out)?;
        } else if let Some(syntax) = Syntax::of(&path)
            && (ty.is_file() || path.is_file())
        {
            out.push((path, syntax));
        }
    }
    Ok(())
}
