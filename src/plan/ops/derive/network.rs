//! A libvirt network's operations.

use super::missing;
use crate::desired::DesiredHost;
use crate::live::LiveHost;
use crate::plan::ops::{NetworkOp, OpsError, Step};
use crate::plan::{Action, Op};
use crate::render;

pub(super) fn network(
    factory: &str,
    host: &DesiredHost,
    live: Option<&LiveHost>,
    action: &Action,
) -> Result<Vec<Step>, OpsError> {
    let id = &action.id;
    let name = id.name.clone();
    let stop = |out: &mut Vec<Step>| {
        out.push(Step::Network(NetworkOp::Stop { name: name.clone() }));
        out.push(Step::Network(NetworkOp::Undefine { name: name.clone() }));
    };
    let mut out = Vec::new();
    if action.op == Op::Delete {
        stop(&mut out);
        return Ok(out);
    }
    let net = host.networks.iter().find(|n| &n.id == id).ok_or_else(|| missing(id))?;
    match action.op {
        Op::Create | Op::Replace => {
            if action.op == Op::Replace {
                stop(&mut out);
            }
            out.push(Step::Network(NetworkOp::Define { name: name.clone(), xml: render::network(factory, net) }));
            out.push(Step::Network(NetworkOp::Start { name: name.clone() }));
            out.push(Step::Network(NetworkOp::Autostart { name, on: true }));
        }
        Op::Update => {
            let l = live.and_then(|l| l.networks.iter().find(|n| n.name == name));
            if l.is_none_or(|l| !l.active) {
                out.push(Step::Network(NetworkOp::Start { name: name.clone() }));
            }
            if l.is_none_or(|l| !l.autostart) {
                out.push(Step::Network(NetworkOp::Autostart { name, on: true }));
            }
        }
        Op::Delete => unreachable!("handled above"),
    }
    Ok(out)
}
