//! The request writer: one request per connection, its target sent byte for byte as given.

/// The protocol version on the request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Trackers and file servers: a 1.0 request keeps old servers from answering in chunks (either is read).
    Http10,
    Http11,
}

/// A request; every one carries `Connection: close`, so a response without a length ends where the
/// connection does.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, starting with `/`, sent as written (no encoding is added or undone).
    pub target: &'a str,
    /// The Host header's value ([`crate::host_header`]).
    pub host: &'a str,
    pub version: Version,
    /// Headers besides Host, Connection and Content-Length.
    pub headers: &'a [(&'a str, &'a str)],
    /// Sent with a Content-Length; a GET or HEAD without a body has none.
    pub body: &'a [u8],
}

/// A request that would not say what it was asked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A CR, LF or NUL would end the line early and let the rest pass for other headers (a redirect's
    /// `Location` or a router's `controlURL` ends up in the request line).
    #[error("the request's {0} holds a line break or NUL")]
    LineBreak(&'static str),
}

impl Request<'_> {
    pub fn to_bytes(&self) -> Result<Vec<u8>, RequestError> {
        let check = |what: &'static str, text: &str| {
            if text.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                Err(RequestError::LineBreak(what))
            } else {
                Ok(())
            }
        };
        check("method", self.method)?;
        check("target", self.target)?;
        check("host", self.host)?;
        for (name, value) in self.headers {
            check("header name", name)?;
            check("header value", value)?;
        }
        let version = match self.version {
            Version::Http10 => "1.0",
            Version::Http11 => "1.1",
        };
        let mut head = format!(
            "{} {} HTTP/{version}\r\nHost: {}\r\nConnection: close\r\n",
            self.method, self.target, self.host
        );
        if !self.body.is_empty() || !matches!(self.method, "GET" | "HEAD") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        for (name, value) in self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body);
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        method: &'a str,
        headers: &'a [(&'a str, &'a str)],
        body: &'a [u8],
    ) -> Request<'a> {
        Request {
            method,
            target: "/ctl?x=%00",
            host: "10.0.0.1:5000",
            version: Version::Http11,
            headers,
            body,
        }
    }

    #[test]
    fn a_request_has_host_close_and_a_length_when_it_has_a_body() {
        let soap = request("POST", &[("SOAPAction", "\"a#b\"")], b"xy");
        assert_eq!(
            String::from_utf8(soap.to_bytes().unwrap()).unwrap(),
            "POST /ctl?x=%00 HTTP/1.1\r\nHost: 10.0.0.1:5000\r\nConnection: close\r\nContent-Length: 2\r\nSOAPAction: \"a#b\"\r\n\r\nxy"
        );
        let get = Request {
            version: Version::Http10,
            ..request("GET", &[("User-Agent", "Spore")], b"")
        };
        assert_eq!(
            String::from_utf8(get.to_bytes().unwrap()).unwrap(),
            "GET /ctl?x=%00 HTTP/1.0\r\nHost: 10.0.0.1:5000\r\nConnection: close\r\nUser-Agent: Spore\r\n\r\n"
        );
        let empty_post = String::from_utf8(request("POST", &[], b"").to_bytes().unwrap()).unwrap();
        assert!(
            empty_post.contains("\r\nContent-Length: 0\r\n"),
            "{empty_post}"
        );
    }

    #[test]
    fn line_breaks_cannot_add_headers() {
        let mut r = request("GET", &[], b"");
        r.target = "/x HTTP/1.1\r\nEvil: 1\r\n";
        assert_eq!(r.to_bytes(), Err(RequestError::LineBreak("target")));
        assert!(request("GET", &[("A", "b\nc")], b"").to_bytes().is_err());
        assert!(request("GET", &[("A\0", "b")], b"").to_bytes().is_err());
        let mut r = request("GET", &[], b"");
        r.host = "h\r\n";
        assert!(r.to_bytes().is_err());
    }
}
