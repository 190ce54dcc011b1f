//! What a change does to the running factory: its class, and the operation on the
//! resource. Every line of a plan shows both.

use serde::{Deserialize, Serialize};

/// How disruptive a change is, from least to most. An action's class is the most
/// disruptive of its changes' classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Done on the running object, nothing restarts (autostart, power state, link MTU,
    /// hugepage count, a new object).
    Live,
    /// Written to the VM's definition; the running guest sees it at its next restart.
    NextRestart,
    /// The running VM must restart now for the change to apply (memory, vCPUs, pins).
    RestartNow,
    /// The object is removed and made again.
    Replace,
    /// A GPU is reset or its MIG layout changed in a way that takes instances from VMs
    /// that stay.
    GpuRelayout,
    /// Data is deleted (a volume).
    DestroysData,
}

impl Class {
    /// The words a person reads on a plan line.
    pub fn label(self) -> &'static str {
        match self {
            Class::Live => "applied live",
            Class::NextRestart => "next restart",
            Class::RestartNow => "restart now",
            Class::Replace => "replace",
            Class::GpuRelayout => "GPU re-layout",
            Class::DestroysData => "destroys data",
        }
    }

    /// Whether a plan line of this class gets the `!` mark.
    pub fn disruptive(self) -> bool {
        match self {
            Class::RestartNow | Class::GpuRelayout | Class::DestroysData => true,
            Class::Live | Class::NextRestart | Class::Replace => false,
        }
    }
}

/// What happens to the resource as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    Create,
    Update,
    Replace,
    Delete,
}

impl Op {
    /// `+`, `~`, `-/+`, `-`; an update of a disruptive class is `!`.
    pub fn symbol(self, class: Class) -> &'static str {
        match self {
            Op::Create => "+",
            Op::Update if class.disruptive() => "!",
            Op::Update => "~",
            Op::Replace => "-/+",
            Op::Delete => "-",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Replace => "replace",
            Op::Delete => "delete",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols() {
        assert_eq!(Op::Update.symbol(Class::Live), "~");
        assert_eq!(Op::Update.symbol(Class::RestartNow), "!");
        assert_eq!(Op::Replace.symbol(Class::Replace), "-/+");
        assert!(Class::GpuRelayout > Class::RestartNow);
    }
}
