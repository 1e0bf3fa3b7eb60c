//! Port mapping for a peer behind a home router: asks the router (UPnP IGD v1/v2, PCP, NAT-PMP) to
//! forward our ports from its external address, renews the leases and removes them on exit.
//!
//! The protocol modules are sans-IO: they build request bytes and parse reply bytes, every length
//! checked before anything is allocated. [`Mapper`] drives them over real sockets.

pub mod client;
pub mod http;
pub mod igd;
pub mod natpmp;
pub mod pcp;
pub mod route;
pub mod ssdp;

pub use client::{is_public, Mapper, MapperConfig, Mapping, Outcome, Via};

/// The transport a mapping is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IANA protocol number (PCP's field).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The name UPnP's `NewProtocol` argument takes.
    pub fn upnp_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// Why a reply could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("reply too short: {0} bytes")]
    Short(usize),
    #[error("reply too long: {0} bytes")]
    Long(usize),
    #[error("unexpected version {0}")]
    Version(u8),
    #[error("unexpected opcode {0}")]
    Opcode(u8),
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Url(#[from] http_client::UrlError),
}
