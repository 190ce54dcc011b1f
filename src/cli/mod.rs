//! The command line: argument parsing and one module per command. Commands only parse,
//! call the library, and print; exit codes are decided here.

pub mod agent;
pub mod apply;
pub mod approve;
pub mod bench;
pub mod completions;
pub mod coord;
pub mod explain;
pub mod graph;
pub mod hosts;
pub mod import;
pub mod init;
pub mod inventory;
pub mod out;
pub mod partitions;
pub mod plan;
pub mod schema;
pub mod status;
pub mod validate;
pub mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit statuses (sysexits.h for usage errors).
pub mod exit {
    pub const OK: u8 = 0;
    pub const INVALID: u8 = 1;
    pub const USAGE: u8 = 64;
}

#[derive(Parser, Debug)]
#[command(name = "fabrik", version = env!("FABRIK_VERSION"), about = "Declarative reconciler for multi-tenant GPU infrastructure")]
pub struct Cli {
    /// Colour and terminal drawing: `auto` honours `NO_COLOR`, `FORCE_COLOR`, `TERM=dumb`
    /// and whether the stream is a terminal.
    #[arg(long, value_enum, global = true, default_value_t = out::ColorChoice::Auto)]
    pub color: out::ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a factory's files offline: syntax, types, units, names and references.
    Validate {
        /// A factory file, or a directory of them.
        #[arg(default_value = ".", env = "FABRIK_FACTORY")]
        path: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Human, env = "FABRIK_FORMAT")]
        format: Format,
        /// Check a tenant's pull request: every `--changed` file must be this tenant's.
        #[arg(long, value_name = "NAME", requires = "changed")]
        tenant: Option<String>,
        /// A file the pull request changes (repeatable; `-` reads paths from stdin, one
        /// a line, as `git diff --name-only` prints them). Needs `--tenant`.
        #[arg(long, value_name = "PATH", num_args = 1.., requires = "tenant")]
        changed: Vec<PathBuf>,
        /// Print the files read, one a line, before the verdict (what `.gitignore` and
        /// `.fabrikignore` leave out is not read; JSON lists them in `files`).
        #[arg(long)]
        list_files: bool,
    },
    /// Print the JSON Schema of the YAML form (or the key reference as Markdown).
    Schema {
        #[arg(long, value_enum, default_value_t = SchemaFormat::Json)]
        format: SchemaFormat,
    },
    /// Explain a diagnostic code: what it protects against, a failing example, the fix.
    Explain {
        /// A code such as `fabrik::mig::layout` (or `mig::layout`).
        code: Option<String>,
        /// List every code with its summary.
        #[arg(long)]
        list: bool,
    },
    /// Generate a factory of N hosts and M VMs; time loading and checking it, and its peak memory.
    Bench(bench::Args),
    /// Serve this host's GPUs and links over stdin/stdout for a fabrik elsewhere (`ssh host fabrik agent`).
    Agent(agent::Args),
    /// Read every host of a factory (or its simulated twins): hardware, GPUs and MIG, links, VMs; report drift.
    Inventory(inventory::Args),
    /// Print the dependency graph of a factory's desired state (Graphviz dot or JSON).
    Graph(graph::Args),
    /// Print the InfiniBand partition membership as OpenSM's `partitions.conf`: every VM port's GUID under its pkey.
    Partitions(partitions::Args),
    /// Show what apply would change: per host, one line per change with its class; exit 2 when there are changes.
    Plan(plan::Args),
    /// Plan, confirm, carry the plan out on the hosts in parallel, and verify with a new plan.
    Apply(apply::Args),
    /// Adopt domains no factory marks: show what would be done, mark them with `--yes`
    /// (metadata only, nothing restarts), and print the declarations to add.
    Import(import::Args),
    /// Keep the hosts equal to a branch's commits, on every change and against drift;
    /// disruptive changes wait for `fabrik approve` (docs/watch.md).
    Watch(Box<watch::Args>),
    /// Show what a watcher applied, refused, waits for and fails at.
    Status(status::Args),
    /// Let a watcher carry out the plan waiting under this id (`fabrik status` lists it).
    Approve(approve::Args),
    /// Write a small, valid starter factory (and the schema editors read) into DIR.
    Init(init::Args),
    /// Print a shell completion script (`fabrik completions bash > /etc/bash_completion.d/fabrik`).
    Completions {
        #[arg(value_enum)]
        shell: completions::Shell,
    },
    /// Print the man page, roff (`fabrik man > /usr/local/share/man/man1/fabrik.1`).
    Man,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Diagnostics with source snippets (graphical on a terminal, plain otherwise).
    Human,
    /// One JSON document on stdout.
    Json,
    /// GitHub Actions annotations on stdout.
    Github,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SchemaFormat {
    Json,
    Markdown,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    out::init(cli.color);
    let code = match cli.command {
        Command::Validate { path, format, tenant, changed, list_files } => {
            validate::run(&path, format, tenant.as_deref(), &changed, list_files)
        }
        Command::Schema { format } => schema::run(format),
        Command::Bench(args) => bench::run(&args),
        Command::Agent(args) => agent::run(&args),
        Command::Inventory(args) => inventory::run(&args),
        Command::Graph(args) => graph::run(&args),
        Command::Partitions(args) => partitions::run(&args),
        Command::Plan(args) => {
            // A plan's connections are used in one burst and closed: keepalive's timers
            // suffice, without libvirt's loop taking the socket on every call.
            crate::driver::libvirt::events::choose(crate::driver::libvirt::events::EventLoop::TimersOnly);
            plan::run(&args)
        }
        Command::Apply(args) => apply::run(&args),
        Command::Explain { code, list } => explain::run(code.as_deref(), list),
        Command::Init(args) => init::run(&args),
        Command::Import(args) => import::run(&args),
        Command::Watch(args) => watch::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Approve(args) => approve::run(&args),
        Command::Completions { shell } => completions::run_completions(shell),
        Command::Man => completions::run_man(),
    };
    ExitCode::from(out::finish(code))
}

/// Human diagnostics are graphical on a terminal that can draw them, with colour on;
/// plain otherwise ([`out::decide`]).
pub fn style_for_stderr() -> crate::diag::render::Style {
    if out::stderr_look().color { crate::diag::render::Style::Fancy } else { crate::diag::render::Style::Plain }
}
