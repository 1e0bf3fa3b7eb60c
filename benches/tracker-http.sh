#!/usr/bin/env bash
# HTTP announce rate of `spore tracker` on one core (taskset 0), loaded by wrk on the other core with 64
# keep-alive connections for 15 s (benches/announce.lua: 1000 torrents, 50 000 peers).
#   benches/tracker-http.sh        (env: DURATION=15s CONNECTIONS=64)
set -euo pipefail
cd "$(dirname "$0")/.."
SPORE=$(pwd)/${SPORE:-target/release/spore}
[ -x "$SPORE" ] || cargo build --release -p spore >&2
out=$(mktemp)
taskset -c 0 "$SPORE" tracker --http 127.0.0.1:0 --udp off > "$out" 2>&1 &
pid=$!
trap 'kill $pid 2> /dev/null || true; rm -f "$out"' EXIT
until grep -q "HTTP on" "$out"; do sleep 0.1; done
url=$(grep -o 'http://[^/]*' "$out")
echo "sample response: $(curl -s "$url/announce?info_hash=%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00%00%01&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=0" | head -c 80 | od -c | head -2 | tr -s ' ' | head -1)"
taskset -c 1 wrk -t1 -c"${CONNECTIONS:-64}" -d"${DURATION:-15s}" -s benches/announce.lua "$url/"
grep -E "peak|VmHWM" "/proc/$pid/status" || true
