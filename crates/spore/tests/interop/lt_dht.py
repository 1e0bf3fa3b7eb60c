#!/usr/bin/python3
"""Seed or download one torrent with libtorrent, finding peers only through the DHT, on loopback.

usage: lt_dht.py seed|get TORRENT|MAGNET SAVE_DIR IP DHT_NODE_IP DHT_NODE_PORT
No trackers, no LSD, no port mapping; the DHT starts from the one node given. libtorrent's checks that
assume a real network (one node per IP, no loopback or private addresses, BEP 42 node ids) are off, so
a DHT of processes on one loopback address works. Prints JSON lines: {"listening": port}, then
{"done": true} once the data is complete (seed: after the check), {"dht_peers": N} when a lookup
returns peers, and error alerts. Keeps running until killed.
"""
import json
import sys
import time

import libtorrent as lt


def main():
    mode, torrent, save, ip, node_ip, node_port = sys.argv[1:7]
    host = "[%s]" % ip if ":" in ip else ip
    s = lt.session({
        "listen_interfaces": "%s:0" % host,
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.dht_notification,
    })
    s.add_dht_node((node_ip, int(node_port)))
    if torrent.startswith("magnet:"):
        params = lt.parse_magnet_uri(torrent)
    else:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(torrent)
    params.save_path = save
    h = s.add_torrent(params)
    print(json.dumps({"mode": mode, "listening": s.listen_port()}), flush=True)
    done = False
    while True:
        if h.status().is_seeding and not done:
            print(json.dumps({"done": True}), flush=True)
            done = True
        for a in s.pop_alerts():
            if isinstance(a, lt.dht_reply_alert):
                print(json.dumps({"dht_peers": a.num_peers}), flush=True)
            elif a.category() & lt.alert.category_t.error_notification:
                print(json.dumps({"alert": a.message()}), flush=True)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
