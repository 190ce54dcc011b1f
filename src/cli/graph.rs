//! `fabrik graph`: the dependency graph of a factory's desired state, as Graphviz or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::exit;
use crate::check;
use crate::diag::render;
use crate::graph::Graph;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A factory file, or a directory of them.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz, one cluster per host (`fabrik graph | dot -Tsvg`).
    Dot,
    /// Nodes in creation order, edges, and the waves of independent resources.
    Json,
}

pub fn run(args: &Args) -> u8 {
    match graph_text(&args.path, args.format) {
        Ok(text) => {
            super::out::print(&text);
            exit::OK
        }
        Err(text) => {
            let _ = std::io::stderr().write_all(text.as_bytes());
            exit::INVALID
        }
    }
}

/// The graph as text, or the diagnostics (rendered) that stopped it.
pub fn graph_text(path: &Path, format: GraphFormat) -> Result<String, String> {
    let v = check::validate(path);
    let style = super::style_for_stderr();
    if !v.is_valid() {
        return Err(super::validate::human(&v, path, style));
    }
    let fail = |diags: Vec<crate::diag::Diagnostic>| -> String {
        diags.iter().map(|d| render::human(d, &v.sources, style) + "\n").collect()
    };
    let desired = crate::desired::build(&v.spec).map_err(fail)?;
    let graph = Graph::of(&desired).map_err(fail)?;
    Ok(match format {
        GraphFormat::Dot => graph.to_dot(),
        GraphFormat::Json => serde_json::to_string_pretty(&graph.to_json()).unwrap_or_default() + "\n",
    })
}
