//! `fabrik graph`: the dependency graph of a factory's desired state, as Graphviz or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::exit;
use crate::check;
use crate::desired::ResourceKind;
use crate::diag::render;
use crate::graph::{Graph, dot};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A factory file, or a directory of them.
    #[arg(default_value = ".", env = "FABRIK_FACTORY")]
    pub path: PathBuf,
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    /// Draw only this host's resources (repeatable).
    #[arg(long, value_name = "HOST")]
    pub host: Vec<String>,
    /// Draw only this tenant's VMs and networks and what they need (repeatable).
    #[arg(long, value_name = "TENANT")]
    pub tenant: Vec<String>,
    /// Draw only resources of this kind: host, gpu, mig, hugepages, vfs, link, net, pool,
    /// volume or vm (repeatable).
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Vec<ResourceKind>,
}

fn parse_kind(word: &str) -> Result<ResourceKind, String> {
    dot::kind_of_word(word).ok_or_else(|| format!("expected one of: {}", dot::kind_words().join(", ")))
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz, one cluster per host (`fabrik graph | dot -Tsvg`).
    Dot,
    /// Nodes in creation order, edges, and the waves of independent resources.
    Json,
}

pub fn run(args: &Args) -> u8 {
    let view = dot::View { hosts: args.host.clone(), tenants: args.tenant.clone(), kinds: args.kind.clone() };
    match graph_view_text(&args.path, args.format, &view) {
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

/// The whole graph as text, or the diagnostics (rendered) that stopped it.
pub fn graph_text(path: &Path, format: GraphFormat) -> Result<String, String> {
    graph_view_text(path, format, &dot::View::default())
}

/// `graph_text`, with `view` narrowing the dot picture (JSON is always the whole graph).
pub fn graph_view_text(path: &Path, format: GraphFormat, view: &dot::View) -> Result<String, String> {
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
        GraphFormat::Dot => graph.to_dot_view(view, &dot::owners(&desired)),
        GraphFormat::Json => {
            serde_json::to_string_pretty(&crate::formats::versioned(crate::formats::GRAPH, &graph.to_json()))
                .unwrap_or_default()
                + "\n"
        }
    })
}
