//! Service endpoints of the factory's VMs: where each is reached — a URL from the
//! address the VM's NIC on the endpoint's network holds — and whether it answers.
//!
//! [`list`] is pure (the desired state, with the addresses the live domains keep, and
//! the templates' endpoints); [`probe`] and [`probe_all`] connect. `fabrik inventory`
//! uses them, and so can any other command that reports on VMs (`fabrik status`).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

use crate::desired::Desired;
use crate::spec::model::Spec;
use crate::spec::model::endpoint::Protocol;

/// The JSON document `fabrik status --factory` prints when no watcher has a status.
pub const ENDPOINTS_FORMAT: &str = "fabrik-endpoints/1";

/// How long a probe waits to connect, and then for an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Probes run side by side, this many at a time: one slow VM does not hold up the rest.
const PROBES_AT_ONCE: usize = 32;

/// One endpoint of one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmEndpoint {
    pub host: String,
    pub vm: String,
    pub name: String,
    pub protocol: Protocol,
    pub network: String,
    pub port: u16,
    /// The address of the VM's NIC on `network`, when it has one.
    pub address: Option<IpAddr>,
    /// `http://10.30.0.182:8000/health`, `tcp://10.30.0.182:22`; `None` without address.
    pub url: Option<String>,
    /// The path an HTTP probe GETs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum Probe {
    /// Connected (tcp), or answered 2xx (http).
    Healthy,
    /// Reached nothing, or an answer that is not 2xx.
    Unhealthy(String),
    /// Not probed: the VM has no address on the endpoint's network.
    NoAddress(String),
    /// Not probed: the VM runs on a simulated twin, where no guest serves anything.
    Simulated,
}

impl Probe {
    /// Whether a person should look: the endpoint answers wrong, or has no address.
    pub fn failing(&self) -> bool {
        match self {
            Probe::Healthy | Probe::Simulated => false,
            Probe::Unhealthy(_) | Probe::NoAddress(_) => true,
        }
    }

    pub fn word(&self) -> &'static str {
        match self {
            Probe::Healthy => "healthy",
            Probe::Unhealthy(_) => "unhealthy",
            Probe::NoAddress(_) => "no address",
            Probe::Simulated => "not probed (simulated twin)",
        }
    }
}

/// Every endpoint of every VM of `desired` (keep the live addresses first:
/// `desired::addr::keep_live`), in host and VM order.
pub fn list(spec: &Spec, desired: &Desired) -> Vec<VmEndpoint> {
    let entries: std::collections::HashMap<String, &crate::spec::model::Vm> =
        spec.vms.iter().flat_map(|e| e.instance_names().into_iter().map(move |n| (n, e))).collect();
    let mut out = Vec::new();
    for host in &desired.hosts {
        for vm in &host.vms {
            let Some(entry) = entries.get(&vm.name) else { continue };
            let Some(template) = entry.template.as_ref().and_then(|t| spec.template(&t.value)) else { continue };
            for ep in &template.endpoints {
                let address = vm
                    .nics
                    .iter()
                    .find(|n| n.network == ep.network.value)
                    .and_then(|n| n.address.as_ref())
                    .map(|a| a.ip);
                let health = match ep.protocol.value {
                    Protocol::Http => Some(ep.health.as_ref().map_or_else(|| "/".to_string(), |h| h.value.clone())),
                    Protocol::Tcp => None,
                };
                let url = address.map(|ip| {
                    let at = SocketAddr::new(ip, ep.port.value);
                    match ep.protocol.value {
                        Protocol::Http => format!("http://{at}{}", health.as_deref().unwrap_or("/")),
                        Protocol::Tcp => format!("tcp://{at}"),
                    }
                });
                out.push(VmEndpoint {
                    host: host.name.clone(),
                    vm: vm.name.clone(),
                    name: ep.name.value.clone(),
                    protocol: ep.protocol.value,
                    network: ep.network.value.clone(),
                    port: ep.port.value,
                    address,
                    url,
                    health,
                });
            }
        }
    }
    out
}

/// Probes one endpoint: a TCP connection, and for `http` a `GET` of its health path.
pub fn probe(ep: &VmEndpoint, timeout: Duration) -> Probe {
    let Some(ip) = ep.address else {
        return Probe::NoAddress(format!("`{}` has no address on `{}`", ep.vm, ep.network));
    };
    let at = SocketAddr::new(ip, ep.port);
    let mut stream = match TcpStream::connect_timeout(&at, timeout) {
        Ok(s) => s,
        Err(e) => return Probe::Unhealthy(format!("cannot connect to {at}: {e}")),
    };
    match ep.protocol {
        Protocol::Tcp => Probe::Healthy,
        Protocol::Http => http_get(&mut stream, at, ep.health.as_deref().unwrap_or("/"), timeout),
    }
}

/// A minimal HTTP/1.1 `GET` (`Connection: close`): the status line is all a health check reads, so this needs
/// no HTTP client (and no TLS stack) beyond the standard library.
fn http_get(stream: &mut TcpStream, at: SocketAddr, path: &str, timeout: Duration) -> Probe {
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {at}\r\nUser-Agent: fabrik\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return Probe::Unhealthy(format!("cannot send the request to {at}: {e}"));
    }
    let mut head = [0u8; 128];
    let mut got = 0;
    while got < head.len() && !head[..got].contains(&b'\n') {
        match stream.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Probe::Unhealthy(format!("no answer from {at}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..got]);
    let line = line.lines().next().unwrap_or_default();
    let code = line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(c) if (200..300).contains(&c) => Probe::Healthy,
        Some(c) => Probe::Unhealthy(format!("GET {path} answered {c}")),
        None => Probe::Unhealthy(format!("GET {path}: not an HTTP answer: {:?}", crate::diag::printable(line))),
    }
}

/// Probes every endpoint, [`PROBES_AT_ONCE`] at a time; results in the order of `eps`.
pub fn probe_all(eps: &[VmEndpoint], timeout: Duration) -> Vec<Probe> {
    let mut out = Vec::with_capacity(eps.len());
    for chunk in eps.chunks(PROBES_AT_ONCE) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|ep| s.spawn(move || probe(ep, timeout))).collect();
            for h in handles {
                out.push(h.join().unwrap_or_else(|_| Probe::Unhealthy("the probe failed".into())));
            }
        });
    }
    out
}

/// An endpoint with what its probe found, as inventory reports it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub endpoint: VmEndpoint,
    pub probe: Probe,
}

/// Every endpoint of the factory, probed. `live` gives the addresses the VMs hold; a
/// factory that does not place (`desired::build` fails) has no endpoints to list.
/// `timeout: None` probes nothing (simulated twins: their guests serve nothing).
pub fn report(spec: &Spec, live: &[crate::live::LiveHost], timeout: Option<Duration>) -> Vec<Report> {
    let Ok(desired) = crate::desired::build(spec) else { return Vec::new() };
    let desired = crate::desired::addr::keep_live(&crate::desired::mac::keep_live(&desired, live), live);
    let eps = list(spec, &desired);
    let probes = match timeout {
        Some(t) => probe_all(&eps, t),
        None => vec![Probe::Simulated; eps.len()],
    };
    eps.into_iter().zip(probes).map(|(endpoint, probe)| Report { endpoint, probe }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16, protocol: Protocol, health: Option<&str>) -> VmEndpoint {
        VmEndpoint {
            host: "h".into(),
            vm: "v".into(),
            name: "api".into(),
            protocol,
            network: "n".into(),
            port,
            address: Some("127.0.0.1".parse().unwrap()),
            url: None,
            health: health.map(str::to_string),
        }
    }

    /// A one-shot HTTP server on loopback answering `status`.
    fn server(status: &'static str) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            }
        });
        port
    }

    #[test]
    fn http_health_is_a_2xx_answer() {
        let t = Duration::from_secs(5);
        assert_eq!(probe(&ep(server("200 OK"), Protocol::Http, Some("/health")), t), Probe::Healthy);
        let p = probe(&ep(server("503 Service Unavailable"), Protocol::Http, Some("/health")), t);
        assert_eq!(p, Probe::Unhealthy("GET /health answered 503".into()));
    }

    #[test]
    fn tcp_is_a_connection_and_a_closed_port_is_unhealthy() {
        let t = Duration::from_secs(5);
        assert_eq!(probe(&ep(server("200 OK"), Protocol::Tcp, None), t), Probe::Healthy);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(matches!(probe(&ep(closed, Protocol::Tcp, None), t), Probe::Unhealthy(_)));
        let mut none = ep(1, Protocol::Tcp, None);
        none.address = None;
        assert!(matches!(probe(&none, t), Probe::NoAddress(_)));
    }
}
