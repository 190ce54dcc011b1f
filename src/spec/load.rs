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
    // Files are read in path order, and those that could be read numbered in that order,
    // so that they can be parsed on several threads and still merge, and be reported,
    // exactly as if one thread had done everything.
    let mut jobs = Vec::new();
    // Per file in path order: the error that kept it from being read, or `None`.
    let mut read_errors = Vec::new();
    for (path, syntax) in files {
        match std::fs::read(&path) {
            Ok(bytes) => {
                jobs.push(Job { id: FileId(jobs.len() as u32), path, syntax, bytes });
                read_errors.push(None);
            }
            Err(e) => read_errors.push(Some(
                Diagnostic::error("fabrik::load::io", format!("cannot read `{}`: {e}", path.display()))
                    .help("check that the file exists and is readable"),
            )),
        }
    }
    let mut parsed = parse_all(jobs).into_iter();
    let mut sources = Sources::default();
    let mut spec = Spec::default();
    for read_error in read_errors {
        if let Some(d) = read_error {
            diags.push(d);
            continue;
        }
        let Some((file, mut file_spec, file_diags)) = parsed.next() else { break };
        // A file's place in the factory's directory can make it a tenant's.
        let layout = file.path.strip_prefix(path).ok().and_then(model::scope::layout_tenant);
        for s in &mut file_spec.scopes {
            s.layout.clone_from(&layout);
        }
        sources.add(file);
        diags.extend(file_diags);
        spec.merge(file_spec, &mut diags);
    }
    Loaded { sources, spec, diags }
}

/// A file to parse, with the id it will have in [`Sources`].
struct Job {
    id: FileId,
    path: PathBuf,
    syntax: Syntax,
    bytes: Vec<u8>,
}

/// Workers parse with the stack the main thread has (8 MiB on Linux), not the 2 MiB of
/// a spawned thread: deeply nested input must behave the same on any thread.
const WORKER_STACK_BYTES: usize = 8 << 20;

/// Parses and decodes every file, on as many threads as there are cores (at most one
/// per file), biggest files first so that the threads finish together. Results come
/// back in the order of `jobs`, whatever thread made them.
fn parse_all(jobs: Vec<Job>) -> Vec<(SourceFile, Spec, Vec<Diagnostic>)> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let parse = |j: Job| parse_file(j.id, j.path, j.syntax, j.bytes);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len());
    if threads <= 1 {
        return jobs.into_iter().map(parse).collect();
    }
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].bytes.len()));
    let results: Vec<Mutex<Option<_>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let jobs: Vec<Mutex<Option<Job>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let job = jobs[i].lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(job) = job {
                let r = parse(job);
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            }
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().stack_size(WORKER_STACK_BYTES).spawn_scoped(s, work).ok())
            .collect();
        // The calling thread works too; if no helper could start, it does everything.
        work();
        for h in helpers {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    results.into_iter().filter_map(|r| r.into_inner().unwrap_or_else(|e| e.into_inner())).collect()
}

/// Parses and decodes one file's bytes, adding it to `sources`.
pub fn load_bytes(
    sources: &mut Sources,
    path: PathBuf,
    syntax: Syntax,
    bytes: Vec<u8>,
) -> (FileId, Spec, Vec<Diagnostic>) {
    let id = FileId(sources.len() as u32);
    let (file, spec, diags) = parse_file(id, path, syntax, bytes);
    let added = sources.add(file);
    debug_assert_eq!(added, id);
    (id, spec, diags)
}

/// Parses and decodes one file's bytes as file `id` of the run. It touches nothing
/// shared, so files can be parsed on several threads.
pub fn parse_file(id: FileId, path: PathBuf, syntax: Syntax, bytes: Vec<u8>) -> (SourceFile, Spec, Vec<Diagnostic>) {
    let (text, bad_utf8_at) = match String::from_utf8(bytes) {
        Ok(t) => (t, None),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            (String::from_utf8_lossy(e.as_bytes()).into_owned(), Some(at))
        }
    };
    let file = SourceFile::new(path, syntax, text);
    if let Some(at) = bad_utf8_at {
        let d = Diagnostic::error("fabrik::spec::not-utf8", "file is not UTF-8 text")
            // The text shown is the lossy decoding, where the bad byte became U+FFFD.
            .at(Span::new(id, at, at + char::REPLACEMENT_CHARACTER.len_utf8()), "first byte that is not UTF-8")
            .help("factory files are UTF-8 text; is this a binary file, or saved in another encoding?");
        return (file, Spec::default(), vec![d]);
    }
    let root = match syntax {
        Syntax::Yaml => yaml::parse(id, &file).map_err(|d| vec![d]),
        Syntax::Kdl => kdl::parse(id, &file),
    };
    let root = match root {
        Ok(Some(root)) => root,
        Ok(None) => {
            let message = if file.text.trim().is_empty() { "file is empty" } else { "file holds only comments" };
            let d = Diagnostic::error("fabrik::spec::empty-file", message)
                .at(Span::new(id, 0, 0), "nothing is declared in this file")
                .help(format!(
                    "a factory file starts with `{}`; remove the file if it is not needed",
                    model::version_line(syntax)
                ));
            return (file, Spec::default(), vec![d]);
        }
        Err(diags) => return (file, Spec::default(), diags),
    };
    let mut d = Decoder::new(syntax);
    let spec = model::decode_file(&mut d, &root);
    drop(root);
    (file, spec, d.diags)
}

/// `.fabrik` beside a factory (a directory, or a file's directory): where fabrik keeps
/// its records and the simulated twins' state.
pub fn fabrik_dir(factory: &Path) -> PathBuf {
    let base = if factory.is_dir() { factory } else { factory.parent().unwrap_or(Path::new(".")) };
    base.join(".fabrik")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parsed_in_parallel_merge_and_report_as_on_one_thread() {
        let dir = std::env::temp_dir().join(format!("fabrik-load-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files: Vec<(&str, String)> = (0..12)
            .map(|i| match i % 4 {
                0 => (".yaml", format!("version: 1\nfactory: f{i}\nhosts:\n  - name: h{i}\n    uri: qemu:///system\n")),
                1 => (".kdl", format!("version 1\nhost h{i} {{\n    uri \"qemu:///system\"\n    bogus 1\n}}\n")),
                2 => (".yaml", format!("version: 1\ntenants:\n  - name: t{i}\n    hosts: [h0]\n    qouta: {{}}\n")),
                _ => (".yaml", "version: 1\nvms: [\n".to_string()),
            })
            .collect();
        for (i, (ext, text)) in files.iter().enumerate() {
            std::fs::write(dir.join(format!("{i:02}{ext}")), text).unwrap();
        }
        // Every file has something to report, and the `factory` names clash when merged.
        let parallel = load(&dir);

        let mut sources = Sources::default();
        let mut spec = Spec::default();
        let mut diags = Vec::new();
        for (i, (ext, text)) in files.iter().enumerate() {
            let syntax = if *ext == ".kdl" { Syntax::Kdl } else { Syntax::Yaml };
            let path = dir.join(format!("{i:02}{ext}"));
            let (_, file_spec, file_diags) = load_bytes(&mut sources, path, syntax, text.clone().into_bytes());
            diags.extend(file_diags);
            spec.merge(file_spec, &mut diags);
        }
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(parallel.diags.len() > 12, "every file contributes diagnostics: {:?}", parallel.diags);
        assert_eq!(parallel.diags, diags);
        let paths = |s: &Sources| s.iter().map(|(_, f)| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&parallel.sources), paths(&sources));
        assert_eq!(serde_json::to_value(&parallel.spec).unwrap(), serde_json::to_value(&spec).unwrap());
    }

    fn load_one(syntax: Syntax, bytes: &[u8]) -> (Sources, Vec<Diagnostic>) {
        let mut sources = Sources::default();
        let (_, _, diags) = load_bytes(&mut sources, PathBuf::from("f"), syntax, bytes.to_vec());
        (sources, diags)
    }

    #[test]
    fn bad_utf8_is_pointed_at_as_a_whole_character() {
        let (sources, diags) = load_one(Syntax::Yaml, b"version: 1\nfactory: a\xffb\n");
        assert_eq!(diags.len(), 1);
        let span = diags[0].primary.as_ref().unwrap().span;
        let file = sources.get(span.file);
        assert_eq!(file.slice(span), "\u{FFFD}");
        assert_eq!(file.line_col(span.start), crate::spec::source::LineCol { line: 2, column: 11 });
    }

    #[test]
    fn a_file_of_comments_is_empty_in_words_of_its_syntax() {
        let (_, diags) = load_one(Syntax::Kdl, b"// nothing\n");
        assert_eq!(diags[0].code, "fabrik::spec::empty-file");
        assert_eq!(diags[0].message, "file holds only comments");
        assert!(diags[0].help.as_deref().unwrap().contains("`version 1`"));
        let (_, diags) = load_one(Syntax::Yaml, b"");
        assert_eq!(diags[0].message, "file is empty");
        assert!(diags[0].help.as_deref().unwrap().contains("`version: 1`"));
    }
}
