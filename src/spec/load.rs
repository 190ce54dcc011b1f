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
/// in path order). Hidden entries are skipped quietly; links are followed (a loop is an
/// error); a dangling link, a FIFO named like a factory file and `*.YAML` are errors;
/// other entries are skipped with a warning that names them.
pub fn load(path: &Path) -> Loaded {
    let (files, mut diags) = match discover(path) {
        Ok(d) => (d.files, d.diags),
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
    let mut factory_bytes = 0u64;
    for (path, syntax) in files {
        let id = FileId(jobs.len() as u32);
        match read_within_limits(&path, id, &mut factory_bytes) {
            Ok(content) => {
                jobs.push(Job { id, path, syntax, content });
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
    spec.shrink_to_fit();
    Loaded { sources, spec, diags }
}

/// Bytes one factory file may hold. The largest factory the project measures (1,000
/// hosts, 10,000 VMs: `fabrik bench`) is 4 MB in all; a file 4 times that is no typo,
/// and reading it costs about 13 times its size in memory.
pub const FILE_BYTES_MAX: u64 = 16 << 20;

/// Bytes all files of one factory may hold together: 16 times the largest measured
/// factory, and about 850 MB of memory to load.
pub const FACTORY_BYTES_MAX: u64 = 64 << 20;

/// A file to parse, with the id it will have in [`Sources`].
struct Job {
    id: FileId,
    path: PathBuf,
    syntax: Syntax,
    content: Content,
}

/// What was read of a file: its bytes, or why it was not read.
enum Content {
    Bytes(Vec<u8>),
    /// Over a size limit; the diagnostic points at the file (its text is not read).
    TooLarge(Diagnostic),
}

/// Reads a file unless it would pass [`FILE_BYTES_MAX`] or, with the files read before
/// it (`factory_bytes`), [`FACTORY_BYTES_MAX`]. The size is checked before reading and
/// the read stops at the limit, so a file that grows meanwhile cannot pass it either.
fn read_within_limits(path: &Path, id: FileId, factory_bytes: &mut u64) -> std::io::Result<Content> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    let size = file.metadata()?.len();
    if size <= FILE_BYTES_MAX {
        file.take(FILE_BYTES_MAX + 1).read_to_end(&mut bytes)?;
    }
    let size = size.max(bytes.len() as u64);
    let at = Span::new(id, 0, 0);
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    if size > FILE_BYTES_MAX {
        return Ok(Content::TooLarge(
            Diagnostic::error(
                "fabrik::load::file-too-large",
                format!(
                    "file is {} ({size} bytes), more than the {} a factory file may hold",
                    mib(size),
                    mib(FILE_BYTES_MAX)
                ),
            )
            .at(at, "this file")
            .help("split the factory into several files; is this file generated wrongly, or not a factory file?"),
        ));
    }
    if *factory_bytes + size > FACTORY_BYTES_MAX {
        return Ok(Content::TooLarge(
            Diagnostic::error(
                "fabrik::load::factory-too-large",
                format!(
                    "with this file the factory holds more than {} ({} before it)",
                    mib(FACTORY_BYTES_MAX),
                    mib(*factory_bytes)
                ),
            )
            .at(at, "this file passes the limit")
            .help("a factory this large is probably not meant: look for generated or copied files in the directory"),
        ));
    }
    *factory_bytes += size;
    Ok(Content::Bytes(bytes))
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

    let parse = |j: Job| match j.content {
        Content::Bytes(bytes) => parse_file(j.id, j.path, j.syntax, bytes),
        Content::TooLarge(d) => (SourceFile::new(j.path, j.syntax, String::new()), Spec::default(), vec![d]),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len());
    if threads <= 1 {
        return jobs.into_iter().map(parse).collect();
    }
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    let len = |j: &Job| match &j.content {
        Content::Bytes(b) => b.len(),
        Content::TooLarge(_) => 0,
    };
    order.sort_by_key(|&i| std::cmp::Reverse(len(&jobs[i])));
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

/// One YAML text decoded on its own, for unit tests that need a [`Spec`]; panics on any
/// diagnostic, since such a test means its text to be clean.
#[cfg(test)]
pub(crate) fn clean_yaml(text: &str) -> Spec {
    let (_, spec, diags) = load_bytes(&mut Sources::default(), "f.yaml".into(), Syntax::Yaml, text.as_bytes().to_vec());
    assert!(diags.is_empty(), "{diags:?}");
    spec
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

/// The files of a factory, and what discovery has to say about the entries it did not
/// take. Hidden entries (`.git`, `.fabrik`) and what `.gitignore` or `.fabrikignore`
/// leave out are skipped without a word.
struct Discovered {
    files: Vec<(PathBuf, Syntax)>,
    diags: Vec<Diagnostic>,
}

/// The file that leaves parts of a directory out of its factory, in `.gitignore` syntax
/// (a repository's fixtures, a `docker-compose.yml`). It is read in every directory of
/// the walk and in the directories above it, as `.gitignore` is.
pub const IGNORE_FILE: &str = ".fabrikignore";

fn discover(path: &Path) -> Result<Discovered, Diagnostic> {
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
        return Ok(Discovered { files: vec![(path.to_path_buf(), syntax)], diags: Vec::new() });
    }
    std::fs::read_dir(path).map_err(|e| {
        Diagnostic::error("fabrik::load::io", format!("cannot read directory `{}`: {e}", path.display()))
            .help("check the directory's permissions")
    })?;
    let mut walk = Walk { files: Vec::new(), diags: Vec::new(), skipped: Vec::new() };
    // ripgrep's walker: `.gitignore` (also outside a git repository, and in the
    // directories above the factory), `.git/info/exclude` and `.fabrikignore`; not the
    // user's global excludes or `.ignore`, so that what a factory is does not depend on
    // who runs fabrik. Links are followed; a loop is reported.
    let walker = ignore::WalkBuilder::new(path)
        .standard_filters(false)
        .hidden(true)
        .parents(true)
        .git_ignore(true)
        .git_exclude(true)
        .require_git(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .follow_links(true)
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    for entry in walker {
        match entry {
            Ok(entry) if entry.depth() == 0 => {}
            Ok(entry) => walk.entry(&entry),
            Err(e) => walk.error(e),
        }
    }
    let Walk { mut files, mut diags, skipped } = walk;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    if !skipped.is_empty() {
        const SHOWN: usize = 10;
        let mut names: Vec<String> = skipped.iter().take(SHOWN).map(|p| format!("`{}`", p.display())).collect();
        if skipped.len() > SHOWN {
            names.push(format!("and {} more", skipped.len() - SHOWN));
        }
        diags.push(
            Diagnostic::warning(
                "fabrik::load::skipped",
                match skipped.len() {
                    1 => format!("{} is not a factory file and was not read", names.join(", ")),
                    n => format!("{n} entries are not factory files and were not read: {}", names.join(", ")),
                },
            )
            .help("factory files end in `.yaml`, `.yml` or `.kdl`; hidden entries (`.git`) are skipped without a word"),
        );
    }
    Ok(Discovered { files, diags })
}

/// A walk through a factory directory.
struct Walk {
    files: Vec<(PathBuf, Syntax)>,
    diags: Vec<Diagnostic>,
    /// Entries that are not factory files (a README, a FIFO without a factory name).
    skipped: Vec<PathBuf>,
}

/// Whether a name ends in a factory extension in any case (`.YAML`, `.Kdl`).
fn factory_like(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        let e = e.to_ascii_lowercase();
        matches!(e.as_str(), "yaml" | "yml" | "kdl")
    })
}

impl Walk {
    /// One entry the walker kept (links already followed: its type is its target's).
    fn entry(&mut self, entry: &ignore::DirEntry) {
        let path = entry.path();
        let Some(ty) = entry.file_type() else { return };
        if ty.is_dir() {
            return;
        }
        if !ty.is_file() {
            if factory_like(path) {
                self.diags.push(
                    Diagnostic::error(
                        "fabrik::load::not-a-file",
                        format!(
                            "`{}` is not a regular file (a FIFO, socket or device), so it is not read",
                            path.display()
                        ),
                    )
                    .help("a factory file must be a regular file; replace it with one"),
                );
            } else {
                self.skipped.push(path.to_path_buf());
            }
            return;
        }
        match Syntax::of(path) {
            Some(syntax) => self.files.push((path.to_path_buf(), syntax)),
            None if factory_like(path) => self.diags.push(
                Diagnostic::error(
                    "fabrik::load::extension-case",
                    format!("`{}` looks like a factory file, but its extension is not lower case", path.display()),
                )
                .help("rename it to end in `.yaml`, `.yml` or `.kdl`; fabrik reads only those"),
            ),
            None => self.skipped.push(path.to_path_buf()),
        }
    }

    /// What the walker could not do: a link loop, a dangling link, an unreadable entry or
    /// ignore file.
    fn error(&mut self, e: ignore::Error) {
        let (path, e) = unwrap_error(e, None);
        let diag = match (&e, path) {
            (ignore::Error::Loop { ancestor, child }, _) => Diagnostic::error(
                "fabrik::load::link-loop",
                format!("`{}` leads back to `{}`: the links make a loop", child.display(), ancestor.display()),
            )
            .help("remove the link, or point it at a directory outside the factory"),
            (ignore::Error::Io(io), Some(path)) if io.kind() == std::io::ErrorKind::NotFound && path.is_symlink() => {
                Diagnostic::error(
                    "fabrik::load::dangling-link",
                    format!("`{}` is a link to nothing that can be read: {io}", path.display()),
                )
                .help("a file of the factory is missing: restore what the link points to, or remove the link")
            }
            (e, Some(path)) => Diagnostic::error("fabrik::load::io", format!("cannot read `{}`: {e}", path.display()))
                .help("check the entry's permissions; an ignore file (`.gitignore`, `.fabrikignore`) must hold valid globs"),
            (e, None) => Diagnostic::error("fabrik::load::io", format!("cannot read the factory directory: {e}"))
                .help("check the entry's permissions; an ignore file (`.gitignore`, `.fabrikignore`) must hold valid globs"),
        };
        self.diags.push(diag);
    }
}

/// The innermost error of the walker's wrappers, with the path one of them named.
fn unwrap_error(e: ignore::Error, path: Option<PathBuf>) -> (Option<PathBuf>, ignore::Error) {
    match e {
        ignore::Error::WithPath { path, err } => unwrap_error(*err, Some(path)),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => unwrap_error(*err, path),
        ignore::Error::Partial(mut errs) if errs.len() == 1 => unwrap_error(errs.remove(0), path),
        e => (path, e),
    }
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

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fabrik-load-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn code_of(content: &Content) -> Option<&'static str> {
        match content {
            Content::Bytes(_) => None,
            Content::TooLarge(d) => Some(d.code),
        }
    }

    #[test]
    fn file_and_factory_sizes_are_limited_at_their_edge() {
        let dir = temp_dir("sizes");
        let path = dir.join("f.yaml");
        std::fs::write(&path, vec![b'#'; FILE_BYTES_MAX as usize]).unwrap();
        let mut total = 0;
        assert_eq!(code_of(&read_within_limits(&path, FileId(0), &mut total).unwrap()), None);
        assert_eq!(total, FILE_BYTES_MAX);
        // The factory's limit: what was read before and this file make exactly the limit.
        let mut total = FACTORY_BYTES_MAX - FILE_BYTES_MAX;
        assert_eq!(code_of(&read_within_limits(&path, FileId(0), &mut total).unwrap()), None);
        let mut total = FACTORY_BYTES_MAX - FILE_BYTES_MAX + 1;
        let refused = read_within_limits(&path, FileId(0), &mut total).unwrap();
        assert_eq!(code_of(&refused), Some("fabrik::load::factory-too-large"));
        std::fs::write(&path, vec![b'#'; FILE_BYTES_MAX as usize + 1]).unwrap();
        let refused = read_within_limits(&path, FileId(0), &mut 0).unwrap();
        assert_eq!(code_of(&refused), Some("fabrik::load::file-too-large"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_200_mb_file_is_refused_located_without_reading_it() {
        let dir = temp_dir("huge");
        std::fs::write(dir.join("a.yaml"), "version: 1\nfactory: f\n").unwrap();
        // Sparse: 200 MB that take no disk, and would take 8 GB to parse.
        std::fs::File::create(dir.join("b.yaml")).unwrap().set_len(200_000_000).unwrap();
        let loaded = load(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let d = loaded.diags.iter().find(|d| d.code == "fabrik::load::file-too-large").expect("refused");
        let file = loaded.sources.get(d.primary.as_ref().unwrap().span.file);
        assert!(file.path.ends_with("b.yaml"));
        assert!(file.text.is_empty());
    }

    #[test]
    fn nothing_is_skipped_without_a_word_but_hidden_entries() {
        use std::os::unix::fs::symlink;
        let dir = temp_dir("discovery");
        let f = "version: 1\n";
        std::fs::write(dir.join("a.yaml"), f).unwrap();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::write(dir.join(".git/config.yaml"), "not: [a factory").unwrap();
        std::fs::create_dir_all(dir.join("real/sub")).unwrap();
        std::fs::write(dir.join("real/b.kdl"), "version 1\n").unwrap();
        symlink(dir.join("real"), dir.join("linked")).unwrap();
        symlink(&dir, dir.join("real/sub/loop")).unwrap();
        symlink(dir.join("missing.yaml"), dir.join("dangling.yaml")).unwrap();
        nix::unistd::mkfifo(&dir.join("pipe.yaml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::write(dir.join("shout.YAML"), f).unwrap();
        std::fs::write(dir.join("README.md"), "# notes\n").unwrap();

        let found = discover(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<String> =
            found.files.iter().map(|(p, _)| p.strip_prefix(&dir).unwrap().display().to_string()).collect();
        assert_eq!(names, ["a.yaml", "linked/b.kdl", "real/b.kdl"]);
        let mut codes: Vec<&str> = found.diags.iter().map(|d| d.code).collect();
        codes.sort();
        assert_eq!(
            codes,
            [
                "fabrik::load::dangling-link",
                "fabrik::load::extension-case",
                "fabrik::load::link-loop",
                "fabrik::load::link-loop",
                "fabrik::load::not-a-file",
                "fabrik::load::skipped"
            ]
        );
        let skipped = found.diags.iter().find(|d| d.code == "fabrik::load::skipped").unwrap();
        assert!(skipped.message.contains("README.md") && !skipped.message.contains(".git"), "{}", skipped.message);
    }

    #[test]
    fn gitignore_and_fabrikignore_leave_files_out_here_and_below() {
        let dir = temp_dir("ignore-files");
        let f = "version: 1\n";
        std::fs::create_dir_all(dir.join("factory/fixtures")).unwrap();
        std::fs::create_dir_all(dir.join("factory/build")).unwrap();
        std::fs::create_dir_all(dir.join("factory/hosts")).unwrap();
        std::fs::write(dir.join("factory/a.yaml"), f).unwrap();
        std::fs::write(dir.join("factory/hosts/b.kdl"), "version 1\n").unwrap();
        std::fs::write(dir.join("factory/fixtures/bad.yaml"), "not: [a factory").unwrap();
        std::fs::write(dir.join("factory/build/out.yaml"), "not: [a factory").unwrap();
        std::fs::write(dir.join("factory/docker-compose.yml"), "services: {}\n").unwrap();
        std::fs::write(dir.join("factory/hosts/scratch.yaml"), "not: [a factory").unwrap();
        let names = |dir: &Path| -> Vec<String> {
            let found = discover(&dir.join("factory")).unwrap();
            found.files.iter().map(|(p, _)| p.strip_prefix(dir).unwrap().display().to_string()).collect()
        };
        // Without ignore files every one of them is read.
        assert_eq!(names(&dir).len(), 6);
        // `.gitignore` above the factory, `.fabrikignore` in it and below it.
        std::fs::write(dir.join(".gitignore"), "build/\n").unwrap();
        std::fs::write(dir.join("factory/.fabrikignore"), "/fixtures/\ndocker-compose.yml\n").unwrap();
        std::fs::write(dir.join("factory/hosts/.fabrikignore"), "scratch.yaml\n").unwrap();
        assert_eq!(names(&dir), ["factory/a.yaml", "factory/hosts/b.kdl"]);
        std::fs::remove_dir_all(&dir).unwrap();
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
