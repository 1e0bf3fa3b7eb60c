//! `spore create`.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use metainfo::{hex, CreateOptions, Magnet, MetainfoError, Version};
use serde_json::json;

use crate::format::{parse_piece_length, size};
use crate::progress::with_progress;
use crate::{CmdResult, CreateArgs, Failure};

pub fn run(args: CreateArgs) -> CmdResult {
    let piece_length =
        parse_piece_length(&args.piece_length).map_err(|e| Failure::BadInput(anyhow!(e)))?;
    let version = if args.v2 {
        Version::V2
    } else if args.hybrid {
        Version::Hybrid
    } else {
        Version::V1
    };
    let trackers = if args.tier {
        vec![args.trackers.clone()]
    } else {
        args.trackers.iter().map(|t| vec![t.clone()]).collect()
    };
    let creation_date = (!args.no_date).then(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let options = CreateOptions {
        version,
        piece_length,
        trackers,
        web_seeds: args.web_seeds.clone(),
        comment: args.comment.clone(),
        source: args.source.clone(),
        name: args.name.clone(),
        private: args.private,
        creation_date,
        created_by: (!args.no_creator).then(|| format!("Spore {}", env!("CARGO_PKG_VERSION"))),
        include_hidden: args.include_hidden,
    };
    if !args.path.exists() {
        return Err(Failure::BadInput(anyhow!(
            "{} does not exist",
            args.path.display()
        )));
    }
    let (multi_file, files) = metainfo::scan(&args.path, args.include_hidden).map_err(classify)?;
    let total: u64 = files.iter().map(|f| f.length).sum();

    let progress = AtomicU64::new(0);
    let started = Instant::now();
    let created = with_progress(total, "hashing", &progress, || {
        metainfo::create_from(&args.path, multi_file, &files, &options, &progress)
    })
    .map_err(classify)?;
    let seconds = started.elapsed().as_secs_f64();
    let t = &created.torrent;

    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.torrent", t.name)));
    // Replaced whole, so a reader never sees half a torrent.
    metainfo::atomic::write_atomic(&output, &created.bytes).map_err(Failure::failed)?;

    let magnet = Magnet::from_torrent(t).to_string();
    let rate = total as f64 / seconds.max(1e-9);
    if args.json {
        let mut value = crate::info_cmd::torrent_json(t);
        value["torrent"] = json!(output.display().to_string());
        value["seconds"] = json!(seconds);
        value["bytes_per_second"] = json!(rate);
        println!("{value}");
    } else {
        println!(
            "created {} ({}, {} pieces of {}, {}) in {seconds:.2} s, {:.2} GB/s",
            output.display(),
            t.version.as_str(),
            t.piece_count(),
            size(t.piece_length),
            size(t.total_size()),
            rate / 1e9
        );
        if let Some(h) = t.info_hash_v1 {
            println!("info-hash v1: {}", hex(&h));
        }
        if let Some(h) = t.info_hash_v2 {
            println!("info-hash v2: {}", hex(&h));
        }
        println!("magnet: {magnet}");
    }
    Ok(())
}

/// Problems with the input are bad input; I/O errors are failures.
fn classify(e: MetainfoError) -> Failure {
    match e {
        MetainfoError::Io { .. } => Failure::Failed(anyhow!(e)),
        other => Failure::BadInput(anyhow!(other)),
    }
}
