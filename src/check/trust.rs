//! `fabrik::trust::*`: what a factory can make run on the operator's machine.
//!
//! fabrik starts two kinds of things for a host: a libvirt connection at its `uri` and
//! its `agent` command. Only an operator's file declares hosts (`check::scope`); here the
//! URI is held to transports and parameters that run no program of the file's choosing
//! and read no file but the operator's key and certificates. The same test runs again
//! just before a connection opens ([`uri_refusal`]), so a host that skipped validation
//! (a library caller) is refused too.

use super::rules::Rule;
use crate::diag::Diagnostic;
use crate::spec::model::Spec;

pub static RULES: &[Rule] = &[
    Rule {
        code: "fabrik::trust::transport",
        summary: "a host `uri` uses a libvirt driver or transport fabrik does not open (`ext`, `libssh`, `test:///<file>`, …)",
        protects: "the operator's machine: `qemu+ext:///system?command=X` runs X, and `test:///<file>` reads a local file and shows its first line",
        example: "hosts:\n  - { name: gpu01, uri: \"qemu+ext:///system?command=/tmp/x\", ... }",
        fix: "use `qemu:///system` (local), `qemu+ssh://`, `qemu+tls://`, `qemu+tcp://` or `qemu+unix://`; twins need no URI (`--sim`)",
    },
    Rule {
        code: "fabrik::trust::uri-parameter",
        summary: "a host `uri` has a query parameter fabrik does not pass (`command=`, `netcat=`, `no_verify=`, …)",
        protects: "the operator's machine and the hosts: `command=` and `netcat=` choose the programs the ssh transport runs, `no_verify=` turns off the server's identity check",
        example: "hosts:\n  - { name: gpu01, uri: \"qemu+ssh://gpu01/system?command=/tmp/x\", ... }",
        fix: "remove the parameter; configure ssh in `~/.ssh/config` (ProxyCommand, keys) where the operator controls it",
    },
    Rule {
        code: "fabrik::trust::uri-credential",
        summary: "a host `uri` carries a password (`user:password@host`); it is redacted in output, but lives in git",
        protects: "a password committed to the factory's repository and seen by everyone who can read it",
        example: "hosts:\n  - { name: gpu01, uri: \"qemu+ssh://root:hunter2@gpu01/system\", ... }",
        fix: "authenticate with an SSH key or a TLS client certificate, and remove the password",
    },
    Rule {
        code: "fabrik::trust::tenant-agent",
        summary: "a tenant's file gives a host an `agent` command",
        protects: "the operator's machine: an agent command runs there, as the operator, on `inventory`, `plan` and `apply`",
        example: "scope: { tenant: acme }\nhosts:\n  - { name: evil, uri: \"qemu:///system\", agent: \"sh -c 'curl …'\", ... }",
        fix: "only an operator's file declares hosts and their agents",
    },
];

/// libvirt transports fabrik opens: the local socket, ssh (the system `ssh`, configured
/// by the operator), TLS, TCP and a named unix socket. Not `ext` (runs any program),
/// nor `libssh`/`libssh2` (their own host-key policies, which a URI parameter relaxes).
pub const TRANSPORTS: &[&str] = &["ssh", "tls", "tcp", "unix"];

/// URI query parameters fabrik passes to libvirt: none of them runs a program or turns
/// a check off. `keyfile` and `pkipath` name the operator's own key and certificates.
pub const PARAMETERS: &[&str] = &["name", "socket", "mode", "proxy", "keyfile", "pkipath", "tls_priority", "sshauth"];

/// The one `test:` URI fabrik opens: libvirt's built-in test host, which reads no file.
pub const TEST_DEFAULT_URI: &str = "test:///default";

/// Why fabrik refuses to open a URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The driver or transport (`fabrik::trust::transport`).
    Transport(String),
    /// A query parameter (`fabrik::trust::uri-parameter`).
    Parameter(String),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Transport(_) => "fabrik::trust::transport",
            Refusal::Parameter(_) => "fabrik::trust::uri-parameter",
        }
    }

    pub fn help(&self) -> &'static str {
        match self {
            Refusal::Transport(_) => {
                "use `qemu:///system`, `qemu+ssh://`, `qemu+tls://`, `qemu+tcp://` or `qemu+unix://`; with `--sim`, twins need no URI"
            }
            Refusal::Parameter(_) => {
                "remove the parameter; configure ssh in `~/.ssh/config`, where the operator controls it"
            }
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Transport(why) | Refusal::Parameter(why) => f.write_str(why),
        }
    }
}

/// Why fabrik refuses to open `uri`; `None` if it may. The URI's syntax is the
/// decoder's business (`fabrik::spec::bad-uri`).
pub fn uri_refusal(uri: &str) -> Option<Refusal> {
    let (scheme, rest) = uri.split_once("://")?;
    let (driver, transport) = match scheme.split_once('+') {
        Some((d, t)) => (d, Some(t)),
        None => (scheme, None),
    };
    if driver == "test" {
        if uri == TEST_DEFAULT_URI {
            return None;
        }
        return Some(Refusal::Transport(format!(
            "only `{TEST_DEFAULT_URI}` of libvirt's test driver is opened; another `test:` URI reads a local file"
        )));
    }
    if driver != "qemu" {
        return Some(Refusal::Transport(format!("libvirt driver `{driver}` is not one fabrik manages (`qemu`)")));
    }
    if let Some(t) = transport
        && !TRANSPORTS.contains(&t)
    {
        let why = match t {
            "ext" => "it runs the program named by `command=`",
            "libssh" | "libssh2" => "it has its own host-key policy; use `ssh`, configured in `~/.ssh/config`",
            _ => "it is not a libvirt transport fabrik knows",
        };
        return Some(Refusal::Transport(format!("transport `{t}` is refused: {why}")));
    }
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or_default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        if PARAMETERS.contains(&key) {
            continue;
        }
        let why = match key {
            "command" => "it names the program the transport runs",
            "netcat" => "it names the program run on the host",
            "no_verify" | "known_hosts_verify" => "it turns off the check of the server's identity",
            _ => "it is not a parameter fabrik passes",
        };
        return Some(Refusal::Parameter(format!("URI parameter `{key}` is refused: {why}")));
    }
    None
}

pub fn check(spec: &Spec, out: &mut Vec<Diagnostic>) {
    for h in &spec.hosts {
        let uri = &h.uri;
        if let Some(refusal) = uri_refusal(&uri.value) {
            out.push(
                Diagnostic::error(refusal.code(), format!("host `{}`: {refusal}", h.name.value))
                    .at(uri.span, "fabrik will not open this")
                    .help(refusal.help()),
            );
        }
        if crate::diag::redact::uri_password(&uri.value).is_some() {
            out.push(
                Diagnostic::warning(
                    "fabrik::trust::uri-credential",
                    format!("host `{}`'s URI carries a password", h.name.value),
                )
                .at(uri.span, "redacted in fabrik's output, but kept in the file")
                .help("authenticate with an SSH key or a TLS client certificate, and remove the password"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_declared_transports_and_parameters_open() {
        for ok in [
            "qemu:///system",
            "qemu+ssh://root@gpu01/system",
            "qemu+ssh://root@gpu01/system?keyfile=/root/.ssh/id_ed25519&sshauth=privkey",
            "qemu+tls://gpu01/system?pkipath=/etc/pki/fabrik",
            "qemu+tcp://gpu01:16509/system",
            "qemu+unix:///system?socket=/run/x/libvirt-sock",
            "qemu:///system?socket=/tmp/t/libvirt-sock",
            "test:///default",
        ] {
            assert_eq!(uri_refusal(ok), None, "{ok}");
        }
        for (bad, code) in [
            ("qemu+ext:///system?command=/tmp/x", "fabrik::trust::transport"),
            ("qemu+libssh2://gpu01/system?known_hosts_verify=ignore", "fabrik::trust::transport"),
            ("test:///etc/passwd", "fabrik::trust::transport"),
            ("test:///default?x=1", "fabrik::trust::transport"),
            ("lxc:///system", "fabrik::trust::transport"),
            ("qemu+ssh://gpu01/system?command=/tmp/x", "fabrik::trust::uri-parameter"),
            ("qemu+ssh://gpu01/system?netcat=/tmp/nc", "fabrik::trust::uri-parameter"),
            ("qemu+tls://gpu01/system?no_verify=1", "fabrik::trust::uri-parameter"),
            ("qemu+ssh://gpu01/system?password=x", "fabrik::trust::uri-parameter"),
        ] {
            assert_eq!(uri_refusal(bad).map(|r| r.code()), Some(code), "{bad}");
        }
    }
}
