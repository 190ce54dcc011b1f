//! Renderings of a plan: human (one line per change, grouped by host), JSON (the plan
//! document, schema in `docs/plan.md`) and Markdown (for a pull-request comment).

use std::collections::HashMap;

use super::{Action, Notice, NoticeKind, Plan, Summary};

/// How much a rendering shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Show {
    /// The unified XML diff under each change that has one.
    pub diff: bool,
    /// Objects fabrik does not manage.
    pub unmanaged: bool,
    /// ANSI colour on the symbols (create green, change yellow, replace, destroy and
    /// disruptive changes red): only when the command's output layer says colour is on.
    pub color: bool,
}

/// GitHub refuses a pull-request comment longer than this many characters.
pub const GITHUB_COMMENT_LIMIT_CHARS: usize = 65_536;
/// Room kept under the limit for the note of what was cut and a CI job's own lines.
const COMMENT_MARGIN_CHARS: usize = 1_024;

/// ANSI colours of the symbols.
mod paint {
    pub const GREEN: &str = "\x1b[32m";
    pub const YELLOW: &str = "\x1b[33m";
    pub const RED: &str = "\x1b[31m";
    pub const RESET: &str = "\x1b[0m";
}

/// Whether an action destroys data, removes something, or disturbs a running tenant:
/// what a reviewer must see first.
pub fn alarming(a: &Action) -> bool {
    match a.op {
        super::Op::Delete | super::Op::Replace => true,
        super::Op::Create | super::Op::Update => a.class.disruptive(),
    }
}

/// The symbol, coloured when `color`.
fn symbol(a: &Action, color: bool) -> String {
    if !color {
        return a.symbol.clone();
    }
    let paint = match a.op {
        super::Op::Create => paint::GREEN,
        super::Op::Update if a.class.disruptive() => paint::RED,
        super::Op::Update => paint::YELLOW,
        super::Op::Replace | super::Op::Delete => paint::RED,
    };
    format!("{paint}{}{}", a.symbol, paint::RESET)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `Plan: 3 to add, 2 to change, 1 to destroy; 1 VM restart, 1 GPU re-layout`.
pub fn summary_line(s: &Summary) -> String {
    let Summary { add, change, destroy, vm_restarts, gpu_relayouts, data_destroyed } = *s;
    if add + change + destroy == 0 {
        return "No changes: the hosts match the desired state.".to_string();
    }
    let mut line = format!("Plan: {add} to add, {change} to change, {destroy} to destroy");
    let mut extra = Vec::new();
    if vm_restarts > 0 {
        extra.push(plural(vm_restarts, "VM restart", "VM restarts"));
    }
    if gpu_relayouts > 0 {
        extra.push(plural(gpu_relayouts, "GPU re-layout", "GPU re-layouts"));
    }
    if data_destroyed > 0 {
        extra.push(plural(data_destroyed, "volume's data deleted", "volumes' data deleted"));
    }
    if !extra.is_empty() {
        line.push_str("; ");
        line.push_str(&extra.join(", "));
    }
    line
}

/// The plan's verdict: [`summary_line`], unless errors stopped part of it — then it
/// never claims the hosts match ("No changes") and says the plan is incomplete.
pub fn headline(plan: &Plan) -> String {
    let errors = plan.errors.len();
    let held = plan.notices.iter().filter(|n| n.kind == NoticeKind::Held).count();
    if errors == 0 && held > 0 {
        // Something no longer desired is still there: never "the hosts match".
        let s = &plan.summary;
        let held = format!(
            "{} held back: something this factory does not manage still uses {}",
            plural(held, "deletion", "deletions"),
            if held == 1 { "it" } else { "them" }
        );
        return if s.add + s.change + s.destroy == 0 {
            format!("No changes planned; {held}.")
        } else {
            format!("{}; {held}.", summary_line(s))
        };
    }
    if errors == 0 {
        return summary_line(&plan.summary);
    }
    let s = &plan.summary;
    let stopped = plural(errors, "error", "errors");
    if s.add + s.change + s.destroy == 0 {
        format!(
            "Plan incomplete: {stopped}; no changes planned, but the hosts are not known to match the desired state."
        )
    } else {
        format!("Plan incomplete: {stopped}; of the rest, {}", summary_line(s).trim_start_matches("Plan: "))
    }
}

fn notice_word(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Unmanaged => "unmanaged",
        NoticeKind::OtherFactory => "other factory",
        NoticeKind::Kept => "kept",
        NoticeKind::Held => "held",
    }
}

fn shown(kind: NoticeKind, show: Show) -> bool {
    match kind {
        NoticeKind::Unmanaged | NoticeKind::OtherFactory => show.unmanaged,
        NoticeKind::Kept | NoticeKind::Held => true,
    }
}

/// One host's share of a plan: its actions in plan order and the notices shown.
struct HostShare<'a> {
    host: &'a str,
    actions: Vec<&'a Action>,
    notices: Vec<&'a Notice>,
}

/// The plan per host, in [`Plan::hosts`]' order, made in one pass over the actions and
/// one over the notices: never a scan of every action for each host (hosts × actions
/// at 10,000 hosts). Hosts with nothing to show are left out.
fn by_host(plan: &Plan, show: Show) -> Vec<HostShare<'_>> {
    let mut shares: Vec<HostShare<'_>> =
        plan.hosts().into_iter().map(|host| HostShare { host, actions: Vec::new(), notices: Vec::new() }).collect();
    let index: HashMap<&str, usize> = shares.iter().enumerate().map(|(i, s)| (s.host, i)).collect();
    for a in &plan.actions {
        if let Some(&i) = index.get(a.id.host.as_str()) {
            shares[i].actions.push(a);
        }
    }
    for n in plan.notices.iter().filter(|n| shown(n.kind, show)) {
        if let Some(&i) = index.get(n.id.host.as_str()) {
            shares[i].notices.push(n);
        }
    }
    shares.retain(|s| !s.actions.is_empty() || !s.notices.is_empty());
    shares
}

/// The actions in the order the renderings show them: host by host, plan order within.
fn in_host_order(plan: &Plan) -> impl Iterator<Item = &Action> {
    by_host(plan, Show::default()).into_iter().flat_map(|s| s.actions)
}

/// The plan for a terminal: per host, one line per change, then the summary.
pub fn human(plan: &Plan, show: Show) -> String {
    let mut out = String::new();
    human_to(plan, show, &mut |chunk| out.push_str(chunk));
    out
}

/// [`human`], handed to `emit` host by host (then the errors and the headline), so a
/// plan of 10,000 hosts is printed as it is written rather than held whole.
pub fn human_to(plan: &Plan, show: Show, emit: &mut dyn FnMut(&str)) {
    let id_width = plan.actions.iter().map(|a| a.id.to_string().len()).max().unwrap_or(0);
    let class_width = plan.actions.iter().map(|a| a.class.label().len()).max().unwrap_or(0);
    for HostShare { host, actions, notices } in by_host(plan, show) {
        let mut out = format!("{host}\n");
        for a in &actions {
            // Padding is computed on the bare symbol: escapes take no columns.
            let pad = " ".repeat(3usize.saturating_sub(a.symbol.chars().count()));
            out.push_str(&format!(
                "  {}{pad} {:<id_width$}  {:<class_width$}  {}\n",
                symbol(a, false),
                a.id.to_string(),
                a.class.label(),
                a.reason
            ));
            if show.diff
                && let Some(diff) = a.shown_diff()
            {
                for line in diff.lines() {
                    out.push_str(&format!("        {line}\n"));
                }
            }
        }
        for n in notices {
            out.push_str(&format!(
                "  ·   {:<id_width$}  {:<class_width$}  {}\n",
                n.id.to_string(),
                notice_word(n.kind),
                n.reason
            ));
        }
        out.push('\n');
        emit(&printed(&out, &actions, show.color));
    }
    let mut out = String::new();
    for e in &plan.errors {
        out.push_str(&format!("error[{}]: {} ({})\n", e.code, e.message, e.id));
        if let Some(at) = &e.at {
            out.push_str(&format!("  --> {at}\n"));
        }
        out.push_str(&format!("  help: {}\n", e.help));
    }
    if !plan.errors.is_empty() {
        out.push('\n');
    }
    out.push_str(&headline(plan));
    out.push('\n');
    emit(&printed(&out, &[], false));
}

/// Text made safe for a terminal — reasons and errors quote hosts and files: none may
/// act on it — then, when `color`, the symbols of `actions` (in the order their lines
/// come) painted.
fn printed(text: &str, actions: &[&Action], color: bool) -> String {
    let out = crate::diag::printable(text).into_owned();
    if !color {
        return out;
    }
    let mut painted = String::with_capacity(out.len());
    let mut actions = actions.iter().copied().peekable();
    for line in out.split_inclusive('\n') {
        match actions.peek() {
            Some(a) if line.starts_with(&format!("  {} ", a.symbol)) && line.contains(&a.id.to_string()) => {
                painted.push_str("  ");
                painted.push_str(&symbol(a, true));
                painted.push_str(&line[2 + a.symbol.len()..]);
                actions.next();
            }
            _ => painted.push_str(line),
        }
    }
    painted
}

/// The plan document: the same JSON `--out` writes.
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_default() + "\n"
}

/// [`json`], written as it is made: a plan of 10,000 hosts is hundreds of megabytes
/// of JSON, never held whole.
pub fn json_to(plan: &Plan, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, plan)?;
    out.write_all(b"\n")
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The plan as a pull-request comment: the headline, the errors, then what destroys
/// data or disturbs tenants, then every host's table with its XML diffs folded in
/// `<details>`. Kept under [`GITHUB_COMMENT_LIMIT_CHARS`]: diffs are left out first,
/// then table rows, with a note saying what was cut.
pub fn markdown(plan: &Plan, show: Show) -> String {
    let mut head = format!("### fabrik plan: `{}`\n\n**{}**\n", plan.factory, headline(plan));
    if !plan.errors.is_empty() {
        head.push_str("\n#### Errors\n\n");
        for e in &plan.errors {
            let at = e.at.as_ref().map_or_else(String::new, |at| format!(" (`{at}`)"));
            head.push_str(&format!("- **`{}`** `{}`{at}: {} — {}\n", e.code, e.id, cell(&e.message), cell(&e.help)));
        }
    }
    let shares = by_host(plan, show);
    let alarms: Vec<&Action> = shares.iter().flat_map(|s| s.actions.iter().copied()).filter(|a| alarming(a)).collect();
    // What alarms comes first, but takes at most half of what is left of the comment,
    // so that the hosts' tables are still seen (2,000 GPU re-layouts alone would fill it).
    let mut alarms_cut = 0;
    if !alarms.is_empty() {
        head.push_str(&format!(
            "\n#### Destroys data, removes, or restarts tenants ({})\n\n|  | resource | class | reason |\n|---|---|---|---|\n",
            alarms.len()
        ));
        let mut room = (GITHUB_COMMENT_LIMIT_CHARS - COMMENT_MARGIN_CHARS).saturating_sub(head.chars().count()) / 2;
        for (i, a) in alarms.iter().enumerate() {
            let r = row(a);
            let len = r.chars().count();
            if len > room {
                alarms_cut = alarms.len() - i;
                break;
            }
            room -= len;
            head.push_str(&r);
        }
    }
    // Per host: the table's rows, and its diffs.
    let mut hosts: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for HostShare { host, actions, notices } in &shares {
        let title = format!("\n#### `{host}`\n\n|  | resource | class | reason |\n|---|---|---|---|\n");
        let mut rows: Vec<String> = actions.iter().map(|a| row(a)).collect();
        rows.extend(
            notices.iter().map(|n| format!("| · | `{}` | {} | {} |\n", n.id, notice_word(n.kind), cell(&n.reason))),
        );
        let diffs = if show.diff {
            actions
                .iter()
                .filter_map(|a| {
                    a.shown_diff().map(|d| {
                        format!(
                            "\n<details><summary><code>{}</code></summary>\n\n```diff\n{d}```\n\n</details>\n",
                            a.id
                        )
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        hosts.push((title, rows, diffs));
    }
    let chars = |s: &str| s.chars().count();
    let mut budget = GITHUB_COMMENT_LIMIT_CHARS - COMMENT_MARGIN_CHARS;
    budget = budget.saturating_sub(chars(&head));
    // Tables first: rows are kept in order while they fit.
    let (mut rows_cut, mut diffs_cut) = (alarms_cut, 0);
    let mut kept_rows: Vec<usize> = Vec::new();
    for (title, rows, _) in &hosts {
        let mut kept = 0;
        if chars(title) <= budget {
            budget -= chars(title);
            // Rows are kept from the top: once one does not fit, none after it is
            // shown (a table with a hole would mislead).
            for r in rows {
                if chars(r) > budget {
                    break;
                }
                budget -= chars(r);
                kept += 1;
            }
        }
        rows_cut += rows.len() - kept;
        kept_rows.push(kept);
    }
    let mut out = head;
    for ((title, rows, diffs), kept) in hosts.iter().zip(kept_rows) {
        if kept == 0 && !rows.is_empty() {
            continue;
        }
        out.push_str(title);
        for r in &rows[..kept] {
            out.push_str(r);
        }
        for d in diffs {
            if chars(d) <= budget {
                budget -= chars(d);
                out.push_str(d);
            } else {
                diffs_cut += 1;
            }
        }
    }
    if rows_cut + diffs_cut > 0 {
        let mut cut = Vec::new();
        if diffs_cut > 0 {
            cut.push(plural(diffs_cut, "XML diff", "XML diffs"));
        }
        if rows_cut > 0 {
            cut.push(plural(rows_cut, "table row", "table rows"));
        }
        out.push_str(&format!(
            "\n> **Cut to stay under GitHub's {GITHUB_COMMENT_LIMIT_CHARS}-character comment limit:** {} left out. \
             `fabrik plan --format json` (or `--out plan.json`) has the whole plan.\n",
            cut.join(" and ")
        ));
    }
    crate::diag::printable(&out).into_owned()
}

fn row(a: &Action) -> String {
    format!("| `{}` | `{}` | {} | {} |\n", a.symbol, a.id, a.class.label(), cell(&a.reason))
}

/// The plan as GitHub Actions annotations: an `::error` on each plan error, a
/// `::warning` on the declaration of each action that destroys data, removes, or
/// restarts tenants ([`alarming`]), and a `::notice` with the headline. `locate` gives a
/// resource's declaration, its path already relative to the repository.
pub fn github(plan: &Plan, locate: impl Fn(&super::ResourceId) -> Option<super::locate::Location>) -> String {
    use crate::diag::render::{escape_data, escape_property};
    let props = |at: Option<super::locate::Location>, title: &str| {
        let mut p: Vec<String> = at
            .map(|at| {
                vec![
                    format!("file={}", escape_property(&at.file)),
                    format!("line={}", at.line),
                    format!("col={}", at.column),
                ]
            })
            .unwrap_or_default();
        p.push(format!("title={}", escape_property(title)));
        p.join(",")
    };
    let mut out = String::new();
    for e in &plan.errors {
        let at =
            e.at.clone().map(|at| super::locate::Location { file: relative(&at.file), ..at }).or_else(|| locate(&e.id));
        let message = format!("{} ({})\nhelp: {}", e.message, e.id, e.help);
        out.push_str(&format!("::error {}::{}\n", props(at, &e.code), escape_data(&message)));
    }
    for a in in_host_order(plan).filter(|a| alarming(a)) {
        let title = format!("fabrik plan: {} ({})", a.op.word(), a.class.label());
        let mut message = format!("{} {}: {}", a.symbol, a.id, a.reason);
        if let Some(old) = &a.moved_from {
            message.push_str(&format!("\nmoved from `{old}`"));
        }
        out.push_str(&format!("::warning {}::{}\n", props(locate(&a.id), &title), escape_data(&message)));
    }
    out.push_str(&format!("::notice title=fabrik plan::{}\n", escape_data(&headline(plan))));
    crate::diag::printable(&out).into_owned()
}

/// A path as a reviewer's repository shows it ([`crate::diag::render::repo_relative`]).
pub fn relative(path: &str) -> String {
    crate::diag::render::repo_relative(std::path::Path::new(path))
}
