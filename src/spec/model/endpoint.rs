//! Service endpoints a template declares: what its VMs serve, on which network and
//! port, and how to tell that it is up. `fabrik inventory` lists them as URLs with a
//! probe result (see `crate::endpoints`).

use crate::spec::decode::{Decoder, Word};
use crate::spec::shape::{Field, Shape, Ty, opt, req};
use crate::spec::source::{Span, Spanned};
use crate::spec::tree::Node;
use crate::words;

words! {
    /// How an endpoint is reached and probed.
    pub enum Protocol {
        /// A TCP port: healthy when it accepts a connection.
        Tcp = "tcp",
        /// An HTTP server: healthy when `health` (default `/`) answers 2xx.
        Http = "http",
    }
}

/// An endpoint of a template's VMs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Endpoint {
    pub name: Spanned<String>,
    pub port: Spanned<u16>,
    pub protocol: Spanned<Protocol>,
    /// The network whose address the endpoint is reached at.
    pub network: Spanned<String>,
    /// The HTTP path a health probe GETs (`http` only).
    pub health: Option<Spanned<String>>,
    #[serde(skip)]
    pub span: Span,
}

pub static ENDPOINT: Shape = Shape {
    name: "endpoint",
    doc: "A service a template's VMs expose: a port on one of their networks.",
    label: Some("name"),
    more: &[],
    fields: &[
        req("name", Ty::Name, "the endpoint's name (`api`)"),
        req("port", Ty::Int { min: 1, max: 65535 }, "the port it listens on"),
        opt("protocol", Ty::Enum(Protocol::NAMES), "tcp (default) or http"),
        req("network", Ty::Name, "the network whose address it is reached at"),
        opt("health", Ty::Str, "the HTTP path a probe GETs, e.g. `/health` (http only; default `/`)"),
    ],
};

/// The template's key.
pub const TEMPLATE_FIELD: Field = opt(
    "endpoints",
    Ty::Items { shape: &ENDPOINT, singular: "endpoint" },
    "services the template's VMs expose, listed with a probe by `fabrik inventory`",
);

pub fn decode(d: &mut Decoder, n: &Node) -> Option<Endpoint> {
    let o = d.object(n, &ENDPOINT, "endpoint")?;
    let name = o.get("name").and_then(|n| d.name(n, "name"));
    let port = o.get("port").and_then(|n| d.uint(n, "port", 1, 65535));
    let protocol = match o.get("protocol") {
        Some(n) => d.word::<Protocol>(n, "protocol"),
        None => Some(Spanned::new(Protocol::Tcp, o.head)),
    };
    let network = o.get("network").and_then(|n| d.name(n, "network"));
    let health = o.get("health").and_then(|n| d.string(n, "health"));
    Some(Endpoint { name: name?, port: port?, protocol: protocol?, network: network?, health, span: o.span })
}
