# A libtorrent peer speaking only uTP (TCP disabled both ways) for crates/utp/tests/libtorrent.rs.
# Makes a 64-piece (1 MiB) torrent whose byte i is (i * 7) % 256 (16 KiB pieces). MODE "seed": seeds it;
# MODE "leech": has no data and downloads it. Prints "PORT V1HASH V2HASH" once listening (and, as a
# seed, seeding; V2HASH truncated to 20 bytes as handshakes carry it), then obeys "connect IP PORT" lines on stdin; as a leech prints "finished"
# when it has the whole file, checked against the piece hashes.
# usage: libtorrent_peer.py DIR IP MODE
import os
import sys
import threading
import time

import libtorrent as lt

d, ip, mode = sys.argv[1], sys.argv[2], sys.argv[3]
piece = 16384
src = os.path.join(d, "src")
os.makedirs(src)
path = os.path.join(src, "data.bin")
with open(path, "wb") as f:
    f.write(bytes((i * 7) % 256 for i in range(64 * piece)))
fs = lt.file_storage()
lt.add_files(fs, path)
t = lt.create_torrent(fs, piece)
lt.set_piece_hashes(t, src)
info = lt.torrent_info(t.generate())

s = lt.session({
    "listen_interfaces": ip + ":0",
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_incoming_tcp": False,
    "enable_outgoing_tcp": False,
    "enable_incoming_utp": True,
    "enable_outgoing_utp": True,
    "allow_multiple_connections_per_ip": True,
    # Plaintext: MSE is crates/mse's business; this is about the transport.
    "out_enc_policy": int(lt.enc_policy.pe_disabled),
    "in_enc_policy": int(lt.enc_policy.pe_disabled),
    "alert_mask": int(lt.alert.category_t.error_notification | lt.alert.category_t.peer_notification
                      | lt.alert.category_t.connect_notification),
})
atp = lt.add_torrent_params()
atp.ti = info
if mode == "seed":
    atp.save_path = src
else:
    atp.save_path = os.path.join(d, "dst")
h = s.add_torrent(atp)
deadline = time.time() + 60
want = lt.torrent_status.seeding if mode == "seed" else lt.torrent_status.downloading
while time.time() < deadline:
    if s.listen_port() != 0 and h.status().state == want:
        break
    time.sleep(0.05)
else:
    sys.exit("libtorrent did not start: %s" % h.status().state)
print(s.listen_port(), str(info.info_hashes().v1), str(info.info_hashes().v2)[:40], flush=True)


def watch():
    end = time.time() + 120
    while time.time() < end:
        if h.status().is_seeding:
            print("finished", flush=True)
            return
        for a in s.pop_alerts():
            print("libtorrent:", a.message(), file=sys.stderr, flush=True)
        time.sleep(0.05)


if mode == "leech":
    threading.Thread(target=watch, daemon=True).start()
for line in sys.stdin:
    words = line.split()
    if len(words) == 3 and words[0] == "connect":
        h.connect_peer((words[1], int(words[2])))
