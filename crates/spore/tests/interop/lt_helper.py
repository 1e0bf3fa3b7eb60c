#!/usr/bin/python3
"""libtorrent's side of Spore's interop tests (driven by ../interop_create.rs).

Run with the Debian interpreter, /usr/bin/python3, which sees python3-libtorrent.
Every command prints one JSON object on stdout.

  info TORRENT
      What libtorrent's torrent_info reads from TORRENT.
  magnet URI
      What libtorrent's parse_magnet_uri reads from URI.
  verify TORRENT SAVE_PATH
      Adds TORRENT to a loopback-only libtorrent session (no DHT/LSD/UPnP/NAT-PMP,
      trackers and web seeds stripped from the copy it loads, so nothing is
      contacted), lets libtorrent check the data under SAVE_PATH against every
      piece hash (v1 SHA-1 pieces and, for v2/hybrid, the SHA-256 merkle trees),
      and reports how many pieces it found valid.
  create --mode MODE --piece-size N --order ORDER [--tracker URL TIER]...
         [--web-seed URL]... [--comment TEXT] SRC OUT
      Make a torrent of SRC with libtorrent's create_torrent and write it to OUT,
      without "creation date" (libtorrent 2.0 always adds one; we drop it from the
      generated entry) and without "created by" (libtorrent only adds it when
      set_creator is called, which we never do). Prints `info OUT`.
      MODE:  v1      flags=v1_only
             v2      flags=v2_only
             hybrid  default flags (v1 + v2; libtorrent pads after every file,
                     including a tail pad after the last one)
             hybrid-notail  flags=canonical_files_no_tail_padding
      ORDER: native  lt.add_files(fs, SRC): libtorrent walks the directory itself.
                     Its v1_only torrents then list files in directory (readdir)
                     order and include hidden files; v2/hybrid are sorted.
             sorted  build the file_storage ourselves with add_file, skipping
                     names that start with "." and sorting paths component-wise
                     by bytes: the order Spore promises, so v1 info-hashes can
                     be compared.
"""

import argparse
import json
import os
import sys

import libtorrent as lt


def torrent_json(ti):
    ih = ti.info_hashes()
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        files.append({
            "path": fs.file_path(i).replace(os.sep, "/"),
            "length": fs.file_size(i),
            "pad": bool(fs.file_flags(i) & lt.file_storage.flag_pad_file),
        })
    tiers = {}
    for t in ti.trackers():
        tiers.setdefault(t.tier, []).append(t.url)
    return {
        "has_v1": ih.has_v1(),
        "has_v2": ih.has_v2(),
        "info_hash_v1": str(ih.v1) if ih.has_v1() else None,
        "info_hash_v2": str(ih.v2) if ih.has_v2() else None,
        "name": ti.name(),
        "piece_length": ti.piece_length(),
        "num_pieces": ti.num_pieces(),
        "total_size": ti.total_size(),
        "private": bool(ti.priv()),
        "files": files,
        "trackers": [tiers[k] for k in sorted(tiers)],
        "web_seeds": [w["url"] for w in ti.web_seeds() if w.get("type", 0) == 0],
        "comment": ti.comment(),
        "creator": ti.creator(),
        "creation_date": ti.creation_date(),
    }


def cmd_info(args):
    return torrent_json(lt.torrent_info(args.torrent))


def cmd_magnet(args):
    p = lt.parse_magnet_uri(args.uri)
    ih = p.info_hashes
    return {
        "info_hash_v1": str(ih.v1) if ih.has_v1() else None,
        "info_hash_v2": str(ih.v2) if ih.has_v2() else None,
        "name": p.name,
        "trackers": list(p.trackers),
        "tracker_tiers": list(p.tracker_tiers),
        "web_seeds": list(p.url_seeds),
    }


def cmd_verify(args):
    import time
    with open(args.torrent, "rb") as f:
        meta = lt.bdecode(f.read())
    for key in (b"announce", b"announce-list", b"url-list", b"httpseeds"):
        meta.pop(key, None)
    ses = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification,
    })
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(meta)
    p.save_path = args.save_path
    h = ses.add_torrent(p)
    deadline = time.monotonic() + args.timeout
    done = False
    while not done and time.monotonic() < deadline:
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            if isinstance(a, (lt.torrent_checked_alert, lt.torrent_error_alert)):
                done = True
    s = h.status()
    return {
        "checked": done,
        "num_pieces": p.ti.num_pieces(),
        "valid_pieces": sum(1 for x in s.pieces if x),
        "is_seeding": s.is_seeding,
        "error": s.errc.message() if s.errc.value() else "",
        "state": str(s.state),
    }


def sorted_file_storage(src):
    """file_storage with SRC's non-hidden files in component-wise byte order."""
    src = os.path.abspath(src)
    name = os.path.basename(src)
    fs = lt.file_storage()
    if os.path.isfile(src):
        fs.add_file(name, os.path.getsize(src))
        return fs
    entries = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fn in filenames:
            if fn.startswith("."):
                continue
            full = os.path.join(dirpath, fn)
            rel = os.path.relpath(full, src).split(os.sep)
            entries.append(([os.fsencode(c) for c in rel], os.path.getsize(full)))
    entries.sort(key=lambda e: e[0])
    for comps, size in entries:
        fs.add_file("/".join([name] + [os.fsdecode(c) for c in comps]), size)
    return fs


def cmd_create(args):
    flags = {
        "v1": lt.create_torrent.v1_only,
        "v2": lt.create_torrent.v2_only,
        "hybrid": 0,
        "hybrid-notail": lt.create_torrent.canonical_files_no_tail_padding,
    }[args.mode]
    src = os.path.abspath(args.src)
    if args.order == "sorted":
        fs = sorted_file_storage(src)
    else:
        fs = lt.file_storage()
        lt.add_files(fs, src)
    ct = lt.create_torrent(fs, args.piece_size, flags=flags)
    for url, tier in args.tracker or []:
        ct.add_tracker(url, int(tier))
    for url in args.web_seed or []:
        ct.add_url_seed(url)
    if args.comment is not None:
        ct.set_comment(args.comment)
    lt.set_piece_hashes(ct, os.path.dirname(src))
    entry = ct.generate()
    entry.pop(b"creation date", None)
    entry.pop(b"created by", None)
    with open(args.out, "wb") as f:
        f.write(lt.bencode(entry))
    return torrent_json(lt.torrent_info(args.out))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info")
    p.add_argument("torrent")
    p = sub.add_parser("magnet")
    p.add_argument("uri")
    p = sub.add_parser("verify")
    p.add_argument("torrent")
    p.add_argument("save_path")
    p.add_argument("--timeout", type=float, default=60.0)
    p = sub.add_parser("create")
    p.add_argument("--mode", choices=["v1", "v2", "hybrid", "hybrid-notail"], required=True)
    p.add_argument("--piece-size", type=int, required=True)
    p.add_argument("--order", choices=["native", "sorted"], required=True)
    p.add_argument("--tracker", nargs=2, action="append", metavar=("URL", "TIER"))
    p.add_argument("--web-seed", action="append")
    p.add_argument("--comment")
    p.add_argument("src")
    p.add_argument("out")
    args = ap.parse_args()
    result = {
        "info": cmd_info,
        "magnet": cmd_magnet,
        "verify": cmd_verify,
        "create": cmd_create,
    }[args.cmd](args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
