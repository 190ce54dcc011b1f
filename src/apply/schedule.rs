//! The order apply may carry a plan's actions out in: for each action, the actions that
//! must finish before it starts.
//!
//! Pure. Two kinds of edge:
//! * **needs** — a creation or update waits for the actions on what it needs (the
//!   graph's dependencies, followed through resources that have no action). When one of
//!   those fails, it is skipped: a VM is not started on a network that was not made.
//! * **after** — on one host, deletions come first, dependents before what they need (a
//!   VM before its volume, its MIG instance, its network), and every creation and update
//!   waits for the host's deletions, so a MIG instance is destroyed before one that
//!   overlaps it is created. These only order: a failed deletion does not stop unrelated
//!   work (what cannot be done then fails with the host's own reason).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::desired::ResourceId;
use crate::graph::Graph;
use crate::plan::{Action, Op, deletion_rank};

/// The edges of one action, by index into the plan's actions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Waits {
    /// Must succeed first; a failure skips this action.
    pub needs: BTreeSet<usize>,
    /// Must finish first, whatever the outcome.
    pub after: BTreeSet<usize>,
}

/// The waits of every action. Without a graph (a saved plan whose factory no longer
/// builds one is refused earlier), only the per-host order applies.
pub fn schedule(actions: &[Action], graph: Option<&Graph>) -> Vec<Waits> {
    let index: BTreeMap<&ResourceId, usize> = actions.iter().enumerate().map(|(i, a)| (&a.id, i)).collect();
    // Each host's deletions, looked up by host (not a scan of every action per action).
    let mut deletions: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, b) in actions.iter().enumerate().filter(|(_, b)| b.op == Op::Delete) {
        deletions.entry(b.id.host.as_str()).or_default().push(j);
    }
    let mut waits = vec![Waits::default(); actions.len()];
    for (i, a) in actions.iter().enumerate() {
        let on_host = deletions.get(a.id.host.as_str()).map(Vec::as_slice).unwrap_or_default();
        if a.op == Op::Delete {
            for &j in on_host {
                if deletion_rank(actions[j].id.kind) > deletion_rank(a.id.kind) {
                    waits[i].after.insert(j);
                }
            }
            continue;
        }
        waits[i].after.extend(on_host.iter().copied());
        let Some(g) = graph else { continue };
        // Through resources without an action: what they need may have one.
        let mut seen: BTreeSet<&ResourceId> = BTreeSet::new();
        let mut todo: Vec<&ResourceId> = g.dependencies(&a.id);
        while let Some(d) = todo.pop() {
            if !seen.insert(d) {
                continue;
            }
            match index.get(d) {
                Some(&j) if actions[j].op != Op::Delete => {
                    waits[i].needs.insert(j);
                }
                _ => todo.extend(g.dependencies(d)),
            }
        }
    }
    waits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Class;

    fn id(s: &str) -> ResourceId {
        ResourceId::parse(s).unwrap()
    }

    fn action(s: &str, op: Op) -> Action {
        Action::new(id(s), op, Class::Live, "test")
    }

    #[test]
    fn creations_need_what_they_depend_on_through_unchanged_resources() {
        let graph = Graph::from_edges(
            vec![id("vm:h1/a"), id("net:h1/n"), id("link:h1/br-n"), id("vm:h2/b")],
            vec![(id("vm:h1/a"), id("net:h1/n")), (id("net:h1/n"), id("link:h1/br-n"))],
        )
        .unwrap();
        // The network exists already: the VM still waits for its bridge's creation.
        let actions =
            vec![action("link:h1/br-n", Op::Create), action("vm:h1/a", Op::Create), action("vm:h2/b", Op::Create)];
        let w = schedule(&actions, Some(&graph));
        assert_eq!(w[1].needs, BTreeSet::from([0]));
        assert!(w[0].needs.is_empty() && w[2].needs.is_empty());
    }

    #[test]
    fn deletions_go_first_on_their_host_dependents_before_what_they_need() {
        let actions = vec![
            action("vm:h1/old", Op::Delete),
            action("mig:h1/0000:1b:00.0/1g.18gb@0", Op::Delete),
            action("mig:h1/0000:1b:00.0/3g.71gb@0", Op::Create),
            action("vm:h2/x", Op::Create),
        ];
        let w = schedule(&actions, None);
        assert_eq!(w[1].after, BTreeSet::from([0]));
        assert_eq!(w[2].after, BTreeSet::from([0, 1]));
        assert!(w[2].needs.is_empty(), "a deletion only orders");
        assert!(w[3].after.is_empty(), "another host's deletions do not hold it up");
    }
}
