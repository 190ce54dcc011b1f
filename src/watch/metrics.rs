//! Prometheus `/metrics` and `/healthz`, served from the watcher's `status.json`: what a
//! scrape shows is exactly what `fabrik status` shows. `prometheus-client` (the
//! Prometheus project's own Rust client) encodes the exposition format; `tiny_http`
//! serves it on a thread of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::state::{StateDir, Status};

/// The server; dropping it stops it.
pub struct Metrics {
    stop: Arc<AtomicBool>,
    server: Arc<tiny_http::Server>,
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
    }
}

/// The exposition text for a status.
pub fn render(s: &Status) -> String {
    let mut reg = Registry::with_prefix("fabrik_watch");
    let gauge = |reg: &mut Registry, name: &str, help: &str, v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        reg.register(name, help, g);
    };
    gauge(&mut reg, "passes", "Passes run since the watcher started", i64::try_from(s.passes).unwrap_or(i64::MAX));
    gauge(
        &mut reg,
        "pending_actions",
        "Changes waiting for `fabrik approve`, a window or a budget",
        s.pending.as_ref().map_or(0, |p| p.actions.len() as i64),
    );
    gauge(&mut reg, "failing_hosts", "Hosts whose work is backing off", s.failing.len() as i64);
    gauge(
        &mut reg,
        "failing_resources",
        "Resources backing off on their own (their hosts are not failing)",
        s.failing_resources.len() as i64,
    );
    gauge(&mut reg, "suspended", "1 while suspended", i64::from(s.suspended.is_some()));
    gauge(
        &mut reg,
        "last_attempt_ok",
        "1 when the last commit tried validated, 0 when it was refused",
        i64::from(s.last_attempted.as_ref().is_none_or(|a| a.ok)),
    );
    // Issue 18: 1 on the instance that plans and applies, 0 on a standby or while the
    // coordination service is unreachable; the role as a label.
    let leader = s.coordination.as_ref().is_none_or(|c| c.role == "leader");
    gauge(&mut reg, "leader", "1 when this watcher leads (plans and applies), 0 as a standby", i64::from(leader));
    let role = Family::<Vec<(String, String)>, Gauge>::default();
    let name = s.coordination.as_ref().map_or("leader", |c| c.role.as_str());
    role.get_or_create(&vec![("role".to_string(), name.to_string())]).set(1);
    reg.register("role", "This watcher's role: leader, standby or unreachable", role);
    let planned = Family::<Vec<(String, String)>, Gauge>::default();
    let converged = Family::<Vec<(String, String)>, Gauge>::default();
    let failures = Family::<Vec<(String, String)>, Gauge>::default();
    for h in &s.hosts {
        let l = vec![("host".to_string(), h.host.clone())];
        planned.get_or_create(&l).set(h.planned as i64);
        converged.get_or_create(&l).set(i64::from(h.converged));
    }
    for f in &s.failing {
        failures.get_or_create(&vec![("host".to_string(), f.host.clone())]).set(i64::from(f.failures));
    }
    reg.register("host_planned_changes", "Changes the last pass planned on the host (drift)", planned);
    reg.register("host_converged", "1 when the host matched the factory after the last pass", converged);
    reg.register("host_consecutive_failures", "Consecutive failed passes of a backing-off host", failures);
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

/// Serves `/metrics` and `/healthz` on `addr` until the returned value is dropped.
pub fn serve(addr: std::net::SocketAddr, state: StateDir) -> std::io::Result<Metrics> {
    let server = Arc::new(tiny_http::Server::http(addr).map_err(std::io::Error::other)?);
    let stop = Arc::new(AtomicBool::new(false));
    let (srv, flag) = (server.clone(), stop.clone());
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for req in srv.incoming_requests() {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            let status = state.status().ok().flatten();
            let (code, body, kind) = match (req.url(), &status) {
                ("/metrics", Some(s)) => (200, render(s), "application/openmetrics-text; version=1.0.0; charset=utf-8"),
                ("/metrics", None) => (503, "no status yet\n".to_string(), "text/plain"),
                ("/healthz", Some(_)) => (200, "ok\n".to_string(), "text/plain"),
                ("/healthz", None) => (503, "no status yet\n".to_string(), "text/plain"),
                _ => (404, "not found\n".to_string(), "text/plain"),
            };
            let header = tiny_http::Header::from_bytes("Content-Type", kind).ok();
            let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
            if let Some(h) = header {
                resp = resp.with_header(h);
            }
            let _ = req.respond(resp);
        }
    })?;
    Ok(Metrics { stop, server })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::state::{FailingHost, HostDrift};

    #[test]
    fn metrics_show_the_status() {
        let s = Status {
            passes: 7,
            failing: vec![FailingHost {
                host: "gpu02".into(),
                kind: "unreachable".into(),
                failures: 3,
                error: "down".into(),
                retry_in_s: 20.0,
                resources: vec![],
            }],
            hosts: vec![HostDrift {
                host: "gpu01".into(),
                planned: 2,
                done: 2,
                waiting: 0,
                converged: true,
                at: "t".into(),
                boot_id: None,
                rebooted: None,
            }],
            ..Status::default()
        };
        let text = render(&s);
        assert!(text.contains("fabrik_watch_passes 7"), "{text}");
        assert!(text.contains("fabrik_watch_failing_hosts 1"), "{text}");
        assert!(text.contains("fabrik_watch_host_planned_changes{host=\"gpu01\"} 2"), "{text}");
        assert!(text.contains("fabrik_watch_host_consecutive_failures{host=\"gpu02\"} 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn serves_metrics_and_health() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let _m = serve(addr, state.clone()).unwrap();
        let get = |path: &str| {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            write!(c, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        };
        assert!(get("/healthz").starts_with("HTTP/1.0 503"), "no status yet");
        state.write_status(&Status { passes: 1, ..Status::default() }).unwrap();
        assert!(get("/healthz").starts_with("HTTP/1.0 200"));
        assert!(get("/metrics").contains("fabrik_watch_passes 1"));
        assert!(get("/nope").starts_with("HTTP/1.0 404"));
    }
}
