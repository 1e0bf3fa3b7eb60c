//! `spore info`, `spore verify` and `spore magnet`.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use anyhow::{anyhow, Context};
use metainfo::{hex, Magnet, Torrent};
use serde_json::{json, Value};

use crate::format::{size, utc};
use crate::{CmdResult, Failure, InfoArgs, MagnetArgs, VerifyArgs};

/// Largest .torrent file read (the bencode decoder's input bound).
const MAX_TORRENT_FILE: u64 = 128 << 20;

/// Reads and parses a .torrent file. Unreadable files fail; malformed ones are bad input.
pub fn load(path: &Path) -> Result<Torrent, Failure> {
    let file = fs::File::open(path)
        .with_context(|| format!("cannot open {}", path.display()))
        .map_err(Failure::Failed)?;
    let mut bytes = Vec::new();
    file.take(MAX_TORRENT_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(Failure::Failed)?;
    if bytes.len() as u64 > MAX_TORRENT_FILE {
        return Err(Failure::BadInput(anyhow!(
            "{} is larger than {} and cannot be a torrent",
            path.display(),
            size(MAX_TORRENT_FILE)
        )));
    }
    Torrent::from_bytes(&bytes).map_err(|e| Failure::BadInput(anyhow!("{}: {e}", path.display())))
}

/// Everything in a torrent, as `spore info --json` and `spore create --json` print it.
pub fn torrent_json(t: &Torrent) -> Value {
    let files: Vec<Value> = t
        .files
        .iter()
        .map(|f| json!({"path": f.path.join("/"), "length": f.length, "pad": f.attr.pad}))
        .collect();
    json!({
        "name": t.name,
        "version": t.version.as_str(),
        "info_hash_v1": t.info_hash_v1.map(|h| hex(&h)),
        "info_hash_v2": t.info_hash_v2.map(|h| hex(&h)),
        "piece_length": t.piece_length,
        "piece_count": t.piece_count(),
        "total_size": t.total_size(),
        "private": t.private,
        "files": files,
        "trackers": t.trackers,
        "web_seeds": t.web_seeds,
        "comment": t.comment,
        "created_by": t.created_by,
        "creation_date": t.creation_date,
        "source": t.source,
        "magnet": Magnet::from_torrent(t).to_string(),
    })
}

pub fn info(args: InfoArgs) -> CmdResult {
    let t = load(&args.torrent)?;
    if args.json {
        println!("{}", torrent_json(&t));
        return Ok(());
    }
    println!("Name:          {}", t.name);
    println!("Version:       {}", t.version.as_str());
    if let Some(h) = t.info_hash_v1 {
        println!("Info-hash v1:  {}", hex(&h));
    }
    if let Some(h) = t.info_hash_v2 {
        println!("Info-hash v2:  {}", hex(&h));
    }
    println!(
        "Total size:    {} ({} bytes)",
        size(t.total_size()),
        t.total_size()
    );
    println!(
        "Pieces:        {} of {} ({} bytes)",
        t.piece_count(),
        size(t.piece_length),
        t.piece_length
    );
    println!("Private:       {}", if t.private { "yes" } else { "no" });
    if let Some(s) = &t.source {
        println!("Source:        {s}");
    }
    if let Some(c) = &t.created_by {
        println!("Created by:    {c}");
    }
    if let Some(d) = t.creation_date {
        println!("Creation date: {}", utc(d));
    }
    if let Some(c) = &t.comment {
        println!("Comment:       {c}");
    }
    if !t.trackers.is_empty() {
        println!("Trackers:");
        for (i, tier) in t.trackers.iter().enumerate() {
            for url in tier {
                println!("  tier {}: {url}", i + 1);
            }
        }
    }
    if !t.web_seeds.is_empty() {
        println!("Web seeds:");
        for url in &t.web_seeds {
            println!("  {url}");
        }
    }
    let real = t.files.iter().filter(|f| !f.attr.pad).count();
    println!("Files ({real}):");
    for (i, f) in t.files.iter().filter(|f| !f.attr.pad).enumerate() {
        println!("  {i:>3}  {}  ({})", f.path.join("/"), size(f.length));
    }
    println!("Magnet:        {}", Magnet::from_torrent(&t));
    Ok(())
}

pub fn magnet(args: MagnetArgs) -> CmdResult {
    let t = load(&args.torrent)?;
    println!("{}", Magnet::from_torrent(&t));
    Ok(())
}

pub fn verify(args: VerifyArgs) -> CmdResult {
    let t = load(&args.torrent)?;
    if !args.path.exists() {
        return Err(Failure::BadInput(anyhow!(
            "{} does not exist",
            args.path.display()
        )));
    }
    let progress = AtomicU64::new(0);
    let total = t.piece_space_len();
    let report = crate::progress::with_progress(total, "verifying", &progress, || {
        metainfo::verify(&t, &args.path, &progress)
    });
    let bad = report.bad_pieces();
    if args.json {
        let files: Vec<Value> = report
            .files
            .iter()
            .map(|f| {
                json!({
                    "path": f.path.join("/"),
                    "length": f.length,
                    "size_on_disk": f.size_on_disk,
                    "bad_pieces": f.bad_pieces,
                    "pieces": f.pieces,
                    "ok": f.ok(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({"ok": report.ok(), "piece_count": report.piece_ok.len(), "bad_pieces": bad, "files": files})
        );
    } else {
        for f in &report.files {
            let status = match f.size_on_disk {
                None => "missing".to_string(),
                Some(n) if n != f.length => {
                    format!("wrong size ({n} bytes, expected {})", f.length)
                }
                Some(_) if f.bad_pieces > 0 => {
                    format!("{} of {} pieces bad", f.bad_pieces, f.pieces)
                }
                Some(_) => "ok".to_string(),
            };
            println!(
                "{:<8} {}",
                if f.ok() { "OK" } else { "BAD" },
                f.path.join("/") + ": " + &status
            );
        }
        if bad.is_empty() {
            println!("all {} pieces ok", report.piece_ok.len());
        } else {
            let listed: Vec<String> = bad.iter().take(50).map(u64::to_string).collect();
            println!(
                "{} of {} pieces bad: {}{}",
                bad.len(),
                report.piece_ok.len(),
                listed.join(","),
                if bad.len() > 50 { ",..." } else { "" }
            );
        }
    }
    if report.ok() {
        Ok(())
    } else {
        Err(Failure::Failed(anyhow!(
            "the data does not match the torrent"
        )))
    }
}
