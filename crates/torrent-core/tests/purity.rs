//! The core stays pure: no runtime, clock, socket, thread, file or OS randomness in its sources. Its
//! Cargo.toml lists only pure crates; this catches what a dependency list cannot (std's clock and
//! sockets, or a crate reached through another).

use std::path::Path;

const FORBIDDEN: [&str; 9] = [
    "tokio",
    "Instant::now",
    "SystemTime::now",
    "std::net::Tcp",
    "std::net::Udp",
    "std::thread",
    "getrandom",
    "rand::thread_rng",
    "std::fs",
];

/// Every line of a `.rs` file below `dir` that names something forbidden, as `file:line: text`.
fn offences(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            found.extend(offences(&path));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        for (i, line) in text.lines().enumerate() {
            for word in FORBIDDEN {
                if line.contains(word) {
                    found.push(format!(
                        "{}:{}: {word}: {}",
                        path.display(),
                        i + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn the_core_reads_no_clock_and_touches_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = offences(&src);
    assert!(found.is_empty(), "impure lines:\n{}", found.join("\n"));
}

#[test]
fn the_manifest_names_only_pure_dependencies() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("read Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    let allowed = ["wire", "tracker-proto", "thiserror", "bytes"];
    for line in deps.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['.', '=', ' ']).next().unwrap_or("");
        assert!(
            allowed.contains(&name),
            "dependency {name:?} is not on the pure list"
        );
    }
}
