//! libvirt lifecycle events: a domain stopped, crashed, undefined or redefined out of
//! band is seen in seconds, not at the next drift pass. One thread per host keeps an
//! event connection open (reconnecting after libvirtd restarts) and turns each event
//! into a [`Trigger::Domain`]; libvirt's default event loop, which delivers them, runs on
//! the thread `driver::libvirt` starts once per process.
//!
//! The `virt` crate has no safe wrapper for domain event callbacks, so registration goes
//! through `virt::sys` (`virConnectDomainEventRegisterAny` with
//! `VIR_DOMAIN_EVENT_ID_LIFECYCLE`); the unsafe code is confined to this file.

use std::collections::BTreeMap;
use std::ffi::{CStr, c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use virt::sys;

use super::trigger::Trigger;
use crate::driver::libvirt::LibvirtDriver;

/// How often an open event connection is checked, and a lost one opened again.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long to wait before opening a connection again after it failed.
const RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// What a callback needs: the host's name and where to send.
struct Ctx {
    host: String,
    tx: UnboundedSender<Trigger>,
}

/// The word for a lifecycle event (libvirt's `virDomainEventType`).
pub fn event_word(event: c_int) -> &'static str {
    match u32::try_from(event).unwrap_or(u32::MAX) {
        sys::VIR_DOMAIN_EVENT_DEFINED => "defined",
        sys::VIR_DOMAIN_EVENT_UNDEFINED => "undefined",
        sys::VIR_DOMAIN_EVENT_STARTED => "started",
        sys::VIR_DOMAIN_EVENT_SUSPENDED => "suspended",
        sys::VIR_DOMAIN_EVENT_RESUMED => "resumed",
        sys::VIR_DOMAIN_EVENT_STOPPED => "stopped",
        sys::VIR_DOMAIN_EVENT_SHUTDOWN => "shutdown",
        sys::VIR_DOMAIN_EVENT_PMSUSPENDED => "pmsuspended",
        sys::VIR_DOMAIN_EVENT_CRASHED => "crashed",
        _ => "other",
    }
}

unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: `opaque` is the `Ctx` boxed in `register`, freed only by `free_ctx` after
    // libvirt has deregistered the callback; `dom` is valid for the call.
    let ctx = unsafe { &*(opaque as *const Ctx) };
    let name = unsafe {
        let p = sys::virDomainGetName(dom);
        if p.is_null() { String::new() } else { CStr::from_ptr(p).to_string_lossy().into_owned() }
    };
    let _ = ctx.tx.send(Trigger::Domain { host: ctx.host.clone(), domain: name, event: event_word(event).into() });
    0
}

unsafe extern "C" fn free_ctx(opaque: *mut c_void) {
    // SAFETY: made by `Box::into_raw` in `register`; libvirt calls this once.
    drop(unsafe { Box::from_raw(opaque as *mut Ctx) });
}

/// Registers the lifecycle callback on `conn`; returns its id.
fn register(driver: &LibvirtDriver, ctx: Ctx) -> Option<c_int> {
    let opaque = Box::into_raw(Box::new(ctx)) as *mut c_void;
    // SAFETY: libvirt calls a lifecycle callback with the lifecycle signature; the
    // generic type is how the C API takes every kind (its VIR_DOMAIN_EVENT_CALLBACK).
    let cb: sys::virConnectDomainEventGenericCallback = unsafe {
        Some(std::mem::transmute::<
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void) -> c_int,
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
        >(on_lifecycle))
    };
    let id = unsafe {
        sys::virConnectDomainEventRegisterAny(
            driver.connection().as_ptr(),
            std::ptr::null_mut(),
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
            cb,
            opaque,
            Some(free_ctx),
        )
    };
    if id < 0 {
        // Not registered: libvirt did not take the context, so it is ours to free.
        unsafe { free_ctx(opaque) };
        return None;
    }
    Some(id)
}

fn deregister(driver: &LibvirtDriver, id: c_int) {
    // SAFETY: the connection is open and `id` came from `register` on it.
    unsafe {
        sys::virConnectDomainEventDeregisterAny(driver.connection().as_ptr(), id);
    }
}

/// One host's event thread: its URI and the flag that ends it.
struct Follower {
    uri: String,
    stop: Arc<AtomicBool>,
}

/// The event threads of a watcher, one per host, all sending to one channel.
pub struct Followers {
    tx: UnboundedSender<Trigger>,
    threads: BTreeMap<String, Follower>,
}

impl Followers {
    pub fn new(tx: UnboundedSender<Trigger>) -> Followers {
        Followers { tx, threads: BTreeMap::new() }
    }

    /// Follows exactly the hosts of `wanted` (name → URI): starts a thread for each new
    /// host or changed URI, ends those of hosts no longer wanted (each ends within a
    /// second). Returns the event lines to log (`follow`, or `error`).
    pub fn sync(&mut self, wanted: BTreeMap<String, String>) -> Vec<serde_json::Value> {
        let gone: Vec<String> =
            self.threads.iter().filter(|(h, f)| wanted.get(*h) != Some(&f.uri)).map(|(h, _)| h.clone()).collect();
        for host in gone {
            if let Some(f) = self.threads.remove(&host) {
                f.stop.store(true, Ordering::SeqCst);
            }
        }
        let mut lines = Vec::new();
        for (host, uri) in wanted {
            if self.threads.contains_key(&host) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, thread_stop, thread_host, thread_uri) = (self.tx.clone(), stop.clone(), host.clone(), uri.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("events-{host}"))
                .spawn(move || follow(thread_host, thread_uri, tx, thread_stop));
            match spawned {
                Ok(_) => {
                    lines.push(serde_json::json!({"event": "follow", "host": host, "uri": uri}));
                    self.threads.insert(host, Follower { uri, stop });
                }
                Err(e) => lines.push(
                    serde_json::json!({"event": "error", "error": format!("cannot follow the events of {host}: {e}")}),
                ),
            }
        }
        lines
    }

    /// Ends every thread.
    pub fn stop_all(&self) {
        for f in self.threads.values() {
            f.stop.store(true, Ordering::SeqCst);
        }
    }

    /// The hosts followed now.
    pub fn hosts(&self) -> Vec<&str> {
        self.threads.keys().map(String::as_str).collect()
    }
}

/// The JSON line for a trigger an event thread sent (`domain`, `host-events`), logged
/// when it arrives, before debouncing merges it into a pass.
pub fn received(t: &Trigger) -> Option<serde_json::Value> {
    match t {
        Trigger::Domain { host, domain, event } => {
            Some(serde_json::json!({"event": "domain", "host": host, "domain": domain, "lifecycle": event}))
        }
        Trigger::HostEvents { host, up } => Some(serde_json::json!({"event": "host-events", "host": host, "up": up})),
        _ => None,
    }
}

/// Follows one host's lifecycle events until `stop` is set. Sends
/// [`Trigger::HostEvents`] when the event connection is lost and when it is back (a
/// returning host may have changed while it was away).
pub fn follow(host: String, uri: String, tx: UnboundedSender<Trigger>, stop: Arc<AtomicBool>) {
    let mut was_up = true;
    while !stop.load(Ordering::SeqCst) {
        let driver = match LibvirtDriver::connect(&uri) {
            Ok(d) => d,
            Err(_) => {
                if was_up {
                    was_up = false;
                    let _ = tx.send(Trigger::HostEvents { host: host.clone(), up: false });
                }
                std::thread::sleep(RECONNECT_DELAY);
                continue;
            }
        };
        let Some(id) = register(&driver, Ctx { host: host.clone(), tx: tx.clone() }) else {
            std::thread::sleep(RECONNECT_DELAY);
            continue;
        };
        if !was_up {
            was_up = true;
            let _ = tx.send(Trigger::HostEvents { host: host.clone(), up: true });
        }
        while !stop.load(Ordering::SeqCst) && driver.connection().is_alive().unwrap_or(false) {
            std::thread::sleep(CHECK_INTERVAL);
        }
        deregister(&driver, id);
        if !stop.load(Ordering::SeqCst) {
            was_up = false;
            let _ = tx.send(Trigger::HostEvents { host: host.clone(), up: false });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_driver_events_arrive_as_triggers() {
        // libvirt's in-process test driver emits lifecycle events like a real host.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let driver = LibvirtDriver::connect("test:///default").expect("the test driver opens");
        let id = register(&driver, Ctx { host: "h".into(), tx }).expect("registered");
        let dom = driver.connection().lookup_domain_by_name("test").expect("the test domain");
        dom.destroy().expect("destroyed");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let got = loop {
            match rx.try_recv() {
                Ok(t) => break t,
                Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("no event: {e}"),
            }
        };
        assert_eq!(got, Trigger::Domain { host: "h".into(), domain: "test".into(), event: "stopped".into() });
        assert_eq!(
            received(&got),
            Some(serde_json::json!({"event": "domain", "host": "h", "domain": "test", "lifecycle": "stopped"}))
        );
        deregister(&driver, id);
    }

    #[test]
    fn followers_follow_the_host_list_as_it_changes() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut f = Followers::new(tx);
        let hosts = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(h, u)| (h.to_string(), u.to_string())).collect()
        };
        let lines = f.sync(hosts(&[("a", "test:///default"), ("b", "test:///default")]));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(f.hosts(), ["a", "b"]);
        assert!(f.sync(hosts(&[("a", "test:///default"), ("b", "test:///default")])).is_empty(), "nothing new");
        let lines = f.sync(hosts(&[("b", "test:///default"), ("c", "test:///default")]));
        assert_eq!(lines, [serde_json::json!({"event": "follow", "host": "c", "uri": "test:///default"})]);
        assert_eq!(f.hosts(), ["b", "c"], "a host no longer declared is no longer followed");
        f.stop_all();
    }
}
