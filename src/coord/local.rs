//! One watcher, no coordination service: always the leader, no epoch.

use super::{Coordinator, Role};

pub struct Local {
    tx: tokio::sync::watch::Sender<Role>,
}

impl Local {
    pub fn new() -> Local {
        Local { tx: tokio::sync::watch::Sender::new(Role::Leader { epoch: None }) }
    }
}

impl Default for Local {
    fn default() -> Local {
        Local::new()
    }
}

impl Coordinator for Local {
    fn role(&self) -> Role {
        Role::Leader { epoch: None }
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<Role> {
        self.tx.subscribe()
    }
    fn fenced(&self, _why: &str) {}
    fn record_applied(&self, _commit: &str) {}
    fn describe(&self) -> String {
        "local".into()
    }
}
