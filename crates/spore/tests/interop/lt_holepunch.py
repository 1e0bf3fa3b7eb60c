#!/usr/bin/python3
"""A libtorrent peer behind a NAT, for Spore's hole punching test (driven by ../holepunch.rs).

usage: lt_holepunch.py seed|get TORRENT SAVE_PATH --relay IP:PORT [--port P] [--no-pex]
                      [--timeout SECONDS]
       lt_holepunch.py relay TORRENT SAVE_PATH --relay IP:PORT [--max-down BYTES_PER_SECOND]

As relay it is the peer in the middle: it listens on IP:PORT, dials nobody, downloads at most
--max-down, and passes peers on by peer exchange and rendezvous (BEP 55) as libtorrent does.

Listens on every address of its network namespace (TCP and uTP on port P, 6881 by default), with DHT, LSD, UPnP
and NAT-PMP off, and dials only the relay: every other peer it can learn of comes from the relay's
peer exchange. libtorrent speaks ut_holepunch (BEP 55) as it comes: when a dial to a peer the relay
told it of fails, it asks the relay for a rendezvous, and a relay's connect message has it dial
over uTP. With --no-pex the session runs without libtorrent's default plugins (so without ut_pex):
it hears of no peer from the relay, and dials one only when a relay's connect message names it.

stdout gets one JSON object per line:
  {"event": "listening", "port": P}
  {"event": "peers", "peers": [{"ip": "A:P", "holepunched": bool, "seed": bool, "down": bytes}]}
        whenever the set of connected peers or their flags change
  {"event": "done", ...}      once every piece is there (seed: after the check)
It exits after --timeout seconds, or when killed (the test kills it when it ends).
"""

import argparse
import faulthandler
import json
import os
import sys
import time

import libtorrent as lt


def emit(**obj):
    try:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        os._exit(3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["seed", "get", "relay"])
    ap.add_argument("torrent")
    ap.add_argument("save_path")
    ap.add_argument("--relay", required=True)
    ap.add_argument("--port", type=int, default=6881)
    ap.add_argument("--no-pex", action="store_true")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--max-down", type=int, default=0)
    args = ap.parse_args()
    faulthandler.enable()

    cat = lt.alert.category_t
    settings = {
        # One fixed port on every address: libtorrent names one port in its extension handshake,
        # and with port 0 each address would get its own.
        "listen_interfaces": (args.relay if args.mode == "relay" else "0.0.0.0:%d" % args.port),
        "download_rate_limit": args.max_down,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": True,
        "enable_incoming_utp": True,
        "enable_outgoing_tcp": True,
        "enable_incoming_tcp": True,
        # A dial into the other home is answered by its router's closed port, so it fails at once;
        # this only bounds the wait where a router drops instead.
        "peer_connect_timeout": 3,
        "min_reconnect_time": 1,
        "alert_mask": cat.error_notification | cat.status_notification | cat.peer_notification
        | cat.connect_notification | cat.peer_log_notification,
    }
    if args.no_pex:
        ses = lt.session(settings, 0)
        ses.add_extension("ut_metadata")
    else:
        ses = lt.session(settings)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.save_path
    handle = ses.add_torrent(params)
    emit(event="listening", port=ses.listen_port())
    if args.mode != "relay":
        host, port = args.relay.rsplit(":", 1)
        handle.connect_peer((host, int(port)))

    deadline = time.monotonic() + args.timeout
    done = False
    last_peers = None
    while time.monotonic() < deadline:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            sys.stderr.write("%.3f %s: %s\n" % (time.monotonic(), type(a).__name__, a.message()))
        sys.stderr.flush()
        peers = sorted(
            (("%s:%d" % p.ip), bool(p.flags & lt.peer_info.holepunched), bool(p.flags & lt.peer_info.seed))
            for p in handle.get_peer_info()
        )
        if peers != last_peers:
            last_peers = peers
            emit(event="peers", peers=[{"ip": ip, "holepunched": hp, "seed": seed} for ip, hp, seed in peers])
        st = handle.status()
        if st.is_seeding and not done:
            done = True
            emit(event="done", downloaded=st.total_payload_download, uploaded=st.total_payload_upload)
    emit(event="timeout")
    os._exit(2)


if __name__ == "__main__":
    main()
