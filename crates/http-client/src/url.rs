//! URLs as far as a request needs them: `scheme://host[:port][/path]` split into borrowed parts, and a
//! reference (a redirect's `Location`, a UPnP `controlURL`) resolved against the URL it came from.

/// Why a URL, or a reference resolved against one, cannot be fetched. Messages name the URL: it is
/// the thing in question.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a {scheme} URL: {url}")]
    Scheme { scheme: String, url: String },
    #[error("not an http(s) URL: {0}")]
    NotHttp(String),
    #[error("{0} has a query but no path")]
    QueryWithoutPath(String),
    #[error("user names in URLs are not supported: {0}")]
    UserInfo(String),
    #[error("bad IPv6 host in {0}")]
    Ipv6Host(String),
    #[error("bad port in {0}")]
    Port(String),
    #[error("no host in {0}")]
    NoHost(String),
    #[error("redirected with an empty Location")]
    EmptyReference,
    #[error("redirected to an unsupported URL {0}")]
    Unsupported(String),
    /// It would hand an authenticated request to anyone on the path.
    #[error("redirected from https to http ({0}); refused")]
    Downgrade(String),
}

/// The parts of a URL a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Url<'a> {
    /// Without the brackets of an IPv6 literal.
    pub host: &'a str,
    pub port: u16,
    /// Path and query, starting with `/`; never the fragment.
    pub path: &'a str,
}

/// Splits `scheme://host[:port][/path]` (`scheme` as written, in lower case: see
/// [`normalise_scheme`]); IPv6 hosts in brackets, returned without them.
pub fn parse_url<'a>(url: &'a str, scheme: &str, default_port: u16) -> Result<Url<'a>, UrlError> {
    let owned = || url.to_string();
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| UrlError::Scheme {
            scheme: scheme.to_string(),
            url: owned(),
        })?;
    // A fragment names a place in the document; it is never sent.
    let rest = rest.split('#').next().unwrap_or(rest);
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
        // "http://host?x" has an empty path; the request still needs a "/" before the query, which a
        // borrowed slice cannot add, so such a URL is refused rather than sent wrong.
        Some(_) => return Err(UrlError::QueryWithoutPath(owned())),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(UrlError::UserInfo(owned()));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or_else(|| UrlError::Ipv6Host(owned()))?;
        let port = match &v6[end + 1..] {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| UrlError::Port(owned()))?,
            ),
        };
        (&v6[..end], port.unwrap_or(default_port))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| UrlError::Port(owned()))?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost(owned()));
    }
    Ok(Url { host, port, path })
}

/// The Host header for `host` and `port`: an IPv6 literal in brackets.
pub fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Whether `url` is `https://` (true) or `http://` (false); schemes are case-insensitive.
pub fn is_tls(url: &str) -> Option<bool> {
    let scheme = url.split_once("://")?.0.to_ascii_lowercase();
    match scheme.as_str() {
        "http" => Some(false),
        "https" => Some(true),
        _ => None,
    }
}

/// The URL with its scheme in lower case, so the rest of the code compares one spelling.
pub fn normalise_scheme(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
        None => url.to_string(),
    }
}

/// The URL without its query, for messages: an announce query is a few hundred bytes of
/// percent-encoded hashes that say nothing to a person.
pub fn shown(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// Where `reference` points, seen from `from` (an http or https URL): absolute, scheme relative
/// (`//host/x`), absolute path (`/x`) or relative to `from`'s directory (`x`). A reference from https
/// to http is refused.
pub fn redirect_target(from: &str, reference: &str) -> Result<String, UrlError> {
    let reference = reference.trim();
    let from_tls = is_tls(from).ok_or_else(|| UrlError::NotHttp(shown(from).to_string()))?;
    let scheme = if from_tls { "https" } else { "http" };
    let after_scheme = &from[scheme.len() + 3..];
    let authority_end = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let origin = &from[..scheme.len() + 3 + authority_end];
    let target = if reference.is_empty() {
        return Err(UrlError::EmptyReference);
    } else if reference.contains("://") {
        let target = normalise_scheme(reference);
        if is_tls(&target).is_none() {
            return Err(UrlError::Unsupported(shown(reference).to_string()));
        }
        target
    } else if let Some(rest) = reference.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if reference.starts_with('/') {
        format!("{origin}{reference}")
    } else {
        let path = shown(&from[origin.len()..]);
        let dir = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => "/",
        };
        format!("{origin}{dir}{reference}")
    };
    if from_tls && is_tls(&target) == Some(false) {
        return Err(UrlError::Downgrade(shown(&target).to_string()));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:6969/announce/key?x=1", "http", 80).unwrap();
        assert_eq!(
            (u.host, u.port, u.path),
            ("127.0.0.1", 6969, "/announce/key?x=1")
        );
        let u = parse_url("udp://[::1]:7/announce", "udp", 80).unwrap();
        assert_eq!((u.host, u.port, u.path), ("::1", 7, "/announce"));
        let u = parse_url("http://tracker.example", "http", 80).unwrap();
        assert_eq!((u.host, u.port, u.path), ("tracker.example", 80, "/"));
        let u = parse_url("https://tracker.example/a#frag", "https", 443).unwrap();
        assert_eq!((u.host, u.port, u.path), ("tracker.example", 443, "/a"));
        let u = parse_url("https://[2001:db8::1]/announce", "https", 443).unwrap();
        assert_eq!((u.host, u.port), ("2001:db8::1", 443));
        assert!(parse_url("ftp://x", "http", 80).is_err());
        assert!(parse_url("http://:80/x", "http", 80).is_err());
        assert!(parse_url("http://h:port/x", "http", 80).is_err());
        assert!(parse_url("http://h:99999/x", "http", 80).is_err());
        assert!(parse_url("http://[::1]x/", "http", 80).is_err());
        assert!(parse_url("http://[::1/", "http", 80).is_err());
        assert!(parse_url("http://user:pw@h/x", "http", 80).is_err());
        assert!(parse_url("http://h?x=1", "http", 80).is_err());
        assert_eq!(is_tls("HTTPS://h/"), Some(true));
        assert_eq!(is_tls("http://h/"), Some(false));
        assert_eq!(is_tls("udp://h/"), None);
        assert_eq!(
            shown("https://h/announce?info_hash=%00"),
            "https://h/announce"
        );
        assert_eq!(host_header("::1", 80), "[::1]:80");
        assert_eq!(host_header("h", 8080), "h:8080");
    }

    #[test]
    fn references_resolve_against_the_url_they_came_from() {
        let from = "http://a.example:8080/dir/x.torrent?k=v";
        let to = |l: &str| redirect_target(from, l).unwrap();
        assert_eq!(
            to("https://b.example/y.torrent"),
            "https://b.example/y.torrent"
        );
        assert_eq!(to("HTTPS://b.example/y"), "https://b.example/y");
        assert_eq!(to("//c.example/z"), "http://c.example/z");
        assert_eq!(to("/top.torrent"), "http://a.example:8080/top.torrent");
        assert_eq!(
            to("other.torrent"),
            "http://a.example:8080/dir/other.torrent"
        );
        assert_eq!(to("  /spaced "), "http://a.example:8080/spaced");
        assert_eq!(redirect_target("https://h", "x").unwrap(), "https://h/x");
        assert_eq!(
            redirect_target("https://h/a/b", "//i/c").unwrap(),
            "https://i/c"
        );
        // Downgrades and other schemes are refused, with a message that says why.
        let e = redirect_target("https://h/a", "http://h/a").unwrap_err();
        assert!(format!("{e}").contains("https to http"), "{e}");
        assert!(redirect_target("https://h/a", "ftp://h/a").is_err());
        assert!(redirect_target("https://h/a", "").is_err());
        assert!(redirect_target("udp://h/a", "/b").is_err());
    }
}
