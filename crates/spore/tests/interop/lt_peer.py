#!/usr/bin/python3
"""Seed or download one torrent with libtorrent, on loopback only.

usage: lt_peer.py seed|get TORRENT|MAGNET SAVE_DIR IP [PEER_IP:PORT ...]
Prints JSON lines: {"listening": port} once listening, {"done": true, ...} when the data is complete
(seed: after the recheck found it whole), and {"pex_peers": N} whenever the number of connected peers
libtorrent has heard of through peer exchange (BEP 11) changes. Then keeps running (seeding) until killed.
Peers go over TCP only, unless LT_TRANSPORTS=utp (uTP only: TCP off both ways) or both; in plaintext
(libtorrent's default between two libtorrents), unless LT_ENCRYPTION=rc4 (MSE with RC4 forced both ways).
"""
import json
import os
import sys
import time

import libtorrent as lt


def main():
    mode, torrent, save, ip = sys.argv[1:5]
    peers = sys.argv[5:]
    transports = os.environ.get("LT_TRANSPORTS", "tcp")
    if transports not in ("tcp", "utp", "both"):
        sys.exit("LT_TRANSPORTS: tcp, utp or both")
    encryption = os.environ.get("LT_ENCRYPTION", "default")
    if encryption not in ("default", "rc4"):
        sys.exit("LT_ENCRYPTION: default or rc4")
    settings = {
        "listen_interfaces": "%s:0" % ip,
        "outgoing_interfaces": ip,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": transports != "tcp",
        "enable_incoming_utp": transports != "tcp",
        "enable_outgoing_tcp": transports != "utp",
        "enable_incoming_tcp": transports != "utp",
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.status_notification,
    }
    if encryption == "rc4":
        # pe_forced both ways, pe_rc4 only.
        settings.update({"out_enc_policy": 0, "in_enc_policy": 0, "allowed_enc_level": 2, "prefer_rc4": True})
    s = lt.session(settings)
    if torrent.startswith("magnet:"):
        params = lt.parse_magnet_uri(torrent)
    else:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent)
    params.save_path = save
    h = s.add_torrent(params)
    port = s.listen_port()
    print(json.dumps({"listening": port}), flush=True)
    for p in peers:
        host, pport = p.rsplit(":", 1)
        h.connect_peer((host, int(pport)))
    announced_done = False
    pex_peers = 0
    while True:
        heard = sum(1 for p in h.get_peer_info() if p.source & lt.peer_info.pex)
        if heard != pex_peers:
            pex_peers = heard
            print(json.dumps({"pex_peers": heard}), flush=True)
        st = h.status()
        if st.is_seeding and not announced_done:
            print(json.dumps({"done": True, "state": str(st.state), "downloaded": st.total_payload_download}), flush=True)
            announced_done = True
        for a in s.pop_alerts():
            if a.category() & lt.alert.category_t.error_notification:
                print(json.dumps({"alert": a.message()}), flush=True)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
