//! Renderings of a plan: human (one line per change, grouped by host), JSON (the plan
//! document, schema in `docs/plan.md`) and Markdown (for a pull-request comment).

use super::{Action, NoticeKind, Plan, Summary};

/// How much a rendering shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Show {
    /// The unified XML diff under each change that has one.
    pub diff: bool,
    /// Objects fabrik does not manage.
    pub unmanaged: bool,
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
    if errors == 0 {
        return summary_line(&plan.summary);
    }
    let s = &plan.summary;
    let stopped = plural(errors, "error", "errors");
    if s.add + s.change + s.destroy == 0 {
        format!("Plan incomplete: {stopped}; no changes planned, but the hosts are not known to match the desired state.")
    } else {
        format!("Plan incomplete: {stopped}; of the rest, {}", summary_line(s).trim_start_matches("Plan: "))
    }
}

fn notice_word(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Unmanaged => "unmanaged",
        NoticeKind::OtherFactory => "other factory",
        NoticeKind::Kept => "kept",
    }
}

fn shown(kind: NoticeKind, show: Show) -> bool {
    match kind {
        NoticeKind::Unmanaged | NoticeKind::OtherFactory => show.unmanaged,
        NoticeKind::Kept => true,
    }
}

/// The plan for a terminal: per host, one line per change, then the summary.
pub fn human(plan: &Plan, show: Show) -> String {
    let mut out = String::new();
    let id_width = plan.actions.iter().map(|a| a.id.to_string().len()).max().unwrap_or(0);
    let class_width = plan.actions.iter().map(|a| a.class.label().len()).max().unwrap_or(0);
    for host in plan.hosts() {
        let actions: Vec<&Action> = plan.on_host(host).collect();
        let notices: Vec<_> = plan.notices.iter().filter(|n| n.id.host == host && shown(n.kind, show)).collect();
        if actions.is_empty() && notices.is_empty() {
            continue;
        }
        out.push_str(&format!("{host}\n"));
        for a in actions {
            out.push_str(&format!(
                "  {:<3} {:<id_width$}  {:<class_width$}  {}\n",
                a.symbol,
                a.id.to_string(),
                a.class.label(),
                a.reason
            ));
            if show.diff
                && let Some(diff) = &a.diff
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
    }
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
    // Reasons and errors quote hosts and files: none may act on the terminal.
    crate::diag::printable(&out).into_owned()
}

/// The plan document: the same JSON `--out` writes.
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_default() + "\n"
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The plan as a pull-request comment.
pub fn markdown(plan: &Plan, show: Show) -> String {
    let mut out = format!("### fabrik plan: `{}`\n\n**{}**\n", plan.factory, headline(plan));
    if !plan.errors.is_empty() {
        out.push_str("\n#### Errors\n\n");
        for e in &plan.errors {
            let at = e.at.as_ref().map_or_else(String::new, |at| format!(" (`{at}`)"));
            out.push_str(&format!("- **`{}`** `{}`{at}: {} — {}\n", e.code, e.id, cell(&e.message), cell(&e.help)));
        }
    }
    for host in plan.hosts() {
        let actions: Vec<&Action> = plan.on_host(host).collect();
        let notices: Vec<_> = plan.notices.iter().filter(|n| n.id.host == host && shown(n.kind, show)).collect();
        if actions.is_empty() && notices.is_empty() {
            continue;
        }
        out.push_str(&format!("\n#### `{host}`\n\n|  | resource | class | reason |\n|---|---|---|---|\n"));
        for a in &actions {
            out.push_str(&format!("| `{}` | `{}` | {} | {} |\n", a.symbol, a.id, a.class.label(), cell(&a.reason)));
        }
        for n in &notices {
            out.push_str(&format!("| · | `{}` | {} | {} |\n", n.id, notice_word(n.kind), cell(&n.reason)));
        }
        if show.diff {
            for a in actions.iter().filter(|a| a.diff.is_some()) {
                out.push_str(&format!(
                    "\n<details><summary><code>{}</code></summary>\n\n```diff\n{}```\n\n</details>\n",
                    a.id,
                    a.diff.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    crate::diag::printable(&out).into_owned()
}
