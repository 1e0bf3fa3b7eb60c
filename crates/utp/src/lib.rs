//! uTP, the Micro Transport Protocol (BEP 29), with LEDBAT congestion control (RFC 6817).
//!
//! [`Connection`] is the protocol, sans-IO: feed it datagrams ([`Connection::handle_datagram`])
//! and times ([`Connection::handle_timeout`] when [`Connection::poll_timeout`] says), send what
//! [`Connection::poll_transmit`] gives, and move bytes with [`Connection::write`] and
//! [`Connection::read`]. No clock is read and nothing is random inside: times
//! ([`conn::Micros`]), connection ids and initial sequence numbers come from the caller.
//! [`UtpSocket`] drives connections over one tokio UDP socket and hands back datagrams that are
//! not uTP (the DHT's, which start with 'd'), and [`UtpStream`] is a connection as
//! `AsyncRead + AsyncWrite`.
//!
//! Bounds: a packet never holds more than its datagram; a connection holds at most
//! `send_buffer` bytes unsent or unacknowledged, at most `recv_buffer` bytes received but
//! unread or out of order, and at most [`conn::MAX_REORDER`] out-of-order packets.

pub mod conn;
pub mod ledbat;
pub mod mtu;
pub mod packet;
mod socket;
mod sys;

pub use socket::ACCEPT_BACKLOG;

pub use conn::{Config, Connection, Micros, State, Transmit, UtpError};
pub use packet::{is_utp, Packet, PacketError, PacketType};
pub use socket::{UtpSocket, UtpStream};
