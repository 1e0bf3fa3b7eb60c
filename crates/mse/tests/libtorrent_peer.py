# A libtorrent seed for crates/mse/tests/libtorrent.rs: makes a 4-piece torrent whose byte i is
# (i * 7) % 256 (a hybrid v1+v2 torrent, libtorrent's default), seeds it on IP with the encryption
# settings asked for, prints "PORT V1HASH V2HASH" once listening and seeding (hex, the v2 one
# truncated to 20 bytes as BitTorrent handshakes and MSE carry it), then obeys "connect IP PORT" lines on stdin until stdin closes.
# usage: libtorrent_peer.py DIR IP LEVEL   (LEVEL: rc4 | plaintext | both)
import os
import sys
import time

import libtorrent as lt

d, ip, level = sys.argv[1], sys.argv[2], sys.argv[3]
piece = 16384
path = os.path.join(d, "data.bin")
with open(path, "wb") as f:
    f.write(bytes((i * 7) % 256 for i in range(4 * piece)))
fs = lt.file_storage()
lt.add_files(fs, path)
t = lt.create_torrent(fs, piece)
lt.set_piece_hashes(t, d)
info = lt.torrent_info(t.generate())

levels = {"rc4": lt.enc_level.pe_rc4, "plaintext": lt.enc_level.pe_plaintext, "both": lt.enc_level.pe_both}
s = lt.session({
    "listen_interfaces": ip + ":0",
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_incoming_utp": False,
    "enable_outgoing_utp": False,
    "in_enc_policy": int(lt.enc_policy.pe_forced),
    "out_enc_policy": int(lt.enc_policy.pe_forced),
    "allowed_enc_level": int(levels[level]),
    "prefer_rc4": level != "plaintext",
    "allow_multiple_connections_per_ip": True,
})
atp = lt.add_torrent_params()
atp.ti = info
atp.save_path = d
h = s.add_torrent(atp)
deadline = time.time() + 60
while time.time() < deadline:
    if s.listen_port() != 0 and h.status().state == lt.torrent_status.seeding:
        break
    time.sleep(0.05)
else:
    sys.exit("libtorrent did not start seeding")
hashes = info.info_hashes()
print(s.listen_port(), str(hashes.v1), str(hashes.v2)[:40], flush=True)
for line in sys.stdin:
    words = line.split()
    if len(words) == 3 and words[0] == "connect":
        h.connect_peer((words[1], int(words[2])))
