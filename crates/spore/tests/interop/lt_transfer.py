#!/usr/bin/python3
"""One libtorrent peer for Spore's peer interop tests (driven by ../interop_peers.rs).

usage: lt_transfer.py seed|get TORRENT SAVE_PATH --ip IP [--peer IP:PORT]... [--timeout SECONDS]
                      [--encryption forced|disabled] [--transports tcp|utp|both]

Runs a libtorrent session bound to IP only (listening and outgoing sockets), with DHT, LSD, UPnP
and NAT-PMP off, and peers over TCP only (the default), uTP only (incoming and outgoing TCP off),
or both, adds TORRENT with SAVE_PATH as its save path, and (optionally) dials each
--peer. Trackers in TORRENT are used as they are. --encryption forced sets both encryption policies
to pe_forced with rc4 only (allowed_enc_level pe_rc4); disabled sets both to pe_disabled (plaintext
only); without it libtorrent's defaults hold (pe_enabled both ways).

stdout gets one JSON object per line:
  {"event": "listening", "port": P}            once the listen socket is up
  {"event": "done", ...}                       once every piece is there (seed: after the check)
  {"event": "progress", ...}                   on every change, at least every 5 s
  {"event": "error", "message": ...}           for every error alert
stderr gets every other alert (peers, trackers, state changes), one per line, for post-mortems.

The process exits when stdin reaches end of file (the test that started it is gone), after
--timeout seconds, or when killed.
"""

import argparse
import faulthandler
import json
import os
import sys
import threading
import time

import libtorrent as lt


def emit(**obj):
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        # Nobody reads us any more: the test is gone.
        os._exit(3)


def watch_stdin():
    # The test keeps our stdin open; EOF means it died without killing us. os.read, not
    # sys.stdin, so no buffer lock is held if the interpreter shuts down meanwhile.
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os._exit(3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["seed", "get"])
    ap.add_argument("torrent")
    ap.add_argument("save_path")
    ap.add_argument("--ip", required=True)
    ap.add_argument("--peer", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--encryption", choices=["forced", "disabled"])
    ap.add_argument("--transports", choices=["tcp", "utp", "both"], default="tcp")
    args = ap.parse_args()

    # A crash inside libtorrent leaves the Python stack of every thread on stderr, for the log.
    faulthandler.enable()
    threading.Thread(target=watch_stdin, daemon=True).start()

    cat = lt.alert.category_t
    settings = {
        "listen_interfaces": "%s:0" % args.ip,
        "outgoing_interfaces": args.ip,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": args.transports != "tcp",
        "enable_incoming_utp": args.transports != "tcp",
        "enable_outgoing_tcp": args.transports != "utp",
        "enable_incoming_tcp": args.transports != "utp",
        "allow_multiple_connections_per_ip": True,
        "announce_to_all_trackers": True,
        "alert_mask": cat.error_notification | cat.status_notification | cat.peer_notification
        | cat.connect_notification | cat.tracker_notification | cat.storage_notification,
    }
    if args.encryption == "forced":
        settings.update({"out_enc_policy": 0, "in_enc_policy": 0, "allowed_enc_level": 2,
                         "prefer_rc4": True})
    elif args.encryption == "disabled":
        settings.update({"out_enc_policy": 2, "in_enc_policy": 2})
    ses = lt.session(settings)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.save_path
    handle = ses.add_torrent(params)
    emit(event="listening", port=ses.listen_port())
    for peer in args.peer:
        host, port = peer.rsplit(":", 1)
        handle.connect_peer((host, int(port)))

    deadline = time.monotonic() + args.timeout
    done = False
    last_progress = (None, 0.0)
    while time.monotonic() < deadline:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            line = "%s: %s" % (type(a).__name__, a.message())
            if a.category() & cat.error_notification:
                emit(event="error", message=line)
            sys.stderr.write("%.3f %s\n" % (time.monotonic(), line))
        sys.stderr.flush()
        st = handle.status()
        now = time.monotonic()
        if st.is_seeding and not done:
            done = True
            emit(event="done", state=str(st.state), downloaded=st.total_payload_download,
                 uploaded=st.total_payload_upload, pieces=sum(1 for p in st.pieces if p))
        progress = (str(st.state), round(st.progress, 3), st.num_peers, st.num_seeds)
        if progress != last_progress[0] or now - last_progress[1] >= 5.0:
            last_progress = (progress, now)
            emit(event="progress", state=str(st.state), progress=st.progress,
                 downloaded=st.total_payload_download, uploaded=st.total_payload_upload,
                 peers=st.num_peers, seeds=st.num_seeds)
    emit(event="timeout")
    os._exit(2)


if __name__ == "__main__":
    main()
