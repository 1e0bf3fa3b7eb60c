//! File-path validation: a torrent names files, and nothing it names may escape the download directory.

use crate::MetainfoError;

/// Longest file-name component most file systems accept.
const MAX_COMPONENT_BYTES: usize = 255;

/// Device names that Windows reserves in every directory, with or without an extension.
const WINDOWS_RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM0", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7",
    "COM8", "COM9", "LPT0", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
    "CONIN$", "CONOUT$",
];

/// Checks one path component from a torrent (a file or directory name).
///
/// Rejected: empty names, `.` and `..`, separators (`/`, `\`), NUL and other control characters, names
/// longer than 255 bytes, Windows drive prefixes (`C:`) and reserved device names (`CON`, `nul.txt`, ...).
pub fn validate_component(name: &str) -> Result<(), MetainfoError> {
    let bad = |why: &str| {
        Err(MetainfoError::BadPath {
            component: name.escape_debug().to_string(),
            why: why.to_string(),
        })
    };
    if name.is_empty() {
        return bad("empty name");
    }
    if name == "." || name == ".." {
        return bad("refers to a directory by a relative name");
    }
    if name.contains(['/', '\\']) {
        return bad("contains a path separator");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("contains a control character");
    }
    if name.len() > MAX_COMPONENT_BYTES {
        return bad("longer than 255 bytes");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return bad("starts with a drive letter");
    }
    let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
    if WINDOWS_RESERVED
        .iter()
        .any(|reserved| stem.eq_ignore_ascii_case(reserved))
    {
        return bad("is a reserved device name");
    }
    Ok(())
}

/// Rejects duplicate paths and a path that is both a file and a directory of other files.
/// `paths` are the non-pad files' paths, in any order.
pub fn check_unique(paths: &mut [&[String]]) -> Result<(), MetainfoError> {
    paths.sort_unstable();
    for pair in paths.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a == b {
            return Err(MetainfoError::Invalid(format!(
                "file path {} appears twice",
                a.join("/")
            )));
        }
        // Sorted order puts a path right before the first path it is a directory prefix of.
        if b.len() > a.len() && b[..a.len()] == *a {
            return Err(MetainfoError::Invalid(format!(
                "{} is both a file and a directory",
                a.join("/")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "a.txt",
            ".hidden",
            "Episode 1: Pilot.mkv",
            "..foo",
            "foo..",
            "ÄÖÜ 日本語",
            "console",
            "COM10",
        ] {
            validate_component(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn rejects_dangerous_names() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/etc",
            "a\\b",
            "x\0y",
            "C:",
            "c:evil",
            "CON",
            "con.txt",
            "Nul",
            "LPT1.log",
            "aux .c",
            "tab\there",
        ] {
            assert!(validate_component(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_component(&"x".repeat(256)).is_err());
        assert!(validate_component(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn finds_duplicates_and_file_directory_clashes() {
        let p = |s: &str| s.split('/').map(String::from).collect::<Vec<_>>();
        let (a, b, c, d) = (p("d/a"), p("d/a/b"), p("d/a!"), p("d/b"));
        assert!(check_unique(&mut [&a[..], &c[..], &d[..]]).is_ok());
        assert!(check_unique(&mut [&a[..], &c[..], &b[..]]).is_err());
        assert!(check_unique(&mut [&d[..], &a[..], &d[..]]).is_err());
    }
}
