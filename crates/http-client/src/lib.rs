//! The one HTTP/1.1 client of Spore, below the engine (tracker announces and scrapes, `.torrent` URLs,
//! the CLI's daemon client) and portmap (a router's UPnP description and SOAP control).
//!
//! One request per connection (`Connection: close`), written exactly as given: an announce's query
//! carries raw `info_hash` and `peer_id` bytes percent-encoded by tracker-proto, which a library's URL
//! builder would encode again. A response is decoded as its bytes arrive, every part of it bounded
//! ([`Limits`]: status line and headers, body, chunk count, chunk-size lines) before anything is
//! allocated, so a hostile server costs at most those bounds whatever it sends.
//!
//! Sans-IO apart from [`exchange`], which runs over any tokio byte stream: resolving, connecting,
//! TLS, timeouts and redirect policy stay with the caller.

mod exchange;
mod request;
mod response;
mod url;

pub use exchange::{exchange, Error};
pub use request::{Request, RequestError, Version};
pub use response::{parse, Decoder, End, Head, Limits, Response, ResponseError, MAX_CHUNK_LINE};
pub use url::{
    host_header, is_tls, normalise_scheme, parse_url, redirect_target, shown, Url, UrlError,
};
