#!/usr/bin/env bash
# Time to first byte of a stream read in the middle of a file still downloading: a 1 GiB single-file
# torrent (random bytes, PIECE pieces) seeded by `spore seed --max-up RATE` on 127.0.0.2, `spore daemon`
# downloading it on 127.0.0.3 (peers found through `spore tracker`), and RUNS reads of 64 KiB each at a
# new place in the second half of the file (curl's time_starttransfer), made while the download runs.
# Bounded: at 50 MB/s the whole download takes about 21 s, and the script stops everything after it.
#   benches/stream.sh            (env: SIZE=1G RATE=50M RUNS=9 PIECE=1M BENCH_DIR=/tmp/spore-stream)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1G}
RATE=${RATE:-50M}
RUNS=${RUNS:-9}
PIECE=${PIECE:-1M}
DIR=${BENCH_DIR:-/tmp/spore-stream}
SPORE=$(pwd)/${SPORE:-target/release/spore}
[ -x "$SPORE" ] || cargo build --release -p spore >&2
mkdir -p "$DIR/seed"
FILE="$DIR/seed/data.bin"
[ -f "$FILE" ] || head -c "$SIZE" /dev/urandom > "$FILE"
BYTES=$(stat -c %s "$FILE")
cat "$FILE" > /dev/null
cd "$DIR"
rm -rf state dl t.torrent tracker.out seed.log daemon.out daemon.err

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; wait "$p" 2> /dev/null || true; done; }
trap cleanup EXIT
wait_line() { until grep -q "$2" "$1" 2> /dev/null; do sleep 0.05; done; }

"$SPORE" tracker --http 127.0.0.1:0 --udp off > tracker.out 2>&1 &
pids+=($!)
wait_line tracker.out "HTTP on"
URL=$(grep -o 'http://[^ ]*' tracker.out)
"$SPORE" create "$FILE" -o t.torrent -t "$URL" --piece-length "$PIECE" --no-date > /dev/null
"$SPORE" seed t.torrent --data seed --listen 127.0.0.2:0 --max-up "$RATE" --no-dht > seed.log 2>&1 &
pids+=($!)
wait_line seed.log "seeding"
SPORE_LOG=warn "$SPORE" daemon --state-dir state --listen 127.0.0.3:0 --api 127.0.0.1:0 \
    --download-dir dl --no-dht > daemon.out 2> daemon.err &
pids+=($!)
wait_line daemon.out "api listening"
API=$(grep -o 'api listening on http://[^ ]*' daemon.out | sed 's|.*http://||')
TOKEN=$(cat state/api-token)
ID=$(curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"path\": \"$DIR/t.torrent\"}" "http://$API/api/torrents" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
progress() {
    curl -s -H "Authorization: Bearer $TOKEN" "http://$API/api/torrents/$ID" |
        python3 -c 'import json,sys; t=json.load(sys.stdin); print("%.3f %s" % (t["progress"], t["state"]))'
}
until progress | grep -q downloading; do sleep 0.05; done

times=()
for i in $(seq "$RUNS"); do
    # Spread over the second half of the file, plus an odd offset so reads never start on a piece boundary.
    offset=$(( BYTES / 2 + BYTES / 2 / RUNS * (i - 1) + 12345 ))
    t=$(curl -s --max-time 30 -o /dev/null -w '%{time_starttransfer}' -H "Authorization: Bearer $TOKEN" \
        -r "$offset-$(( offset + 65535 ))" "http://$API/stream/$ID/0")
    echo "read at $offset: first byte after $t s (download at $(progress))" >&2
    times+=("$t")
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
max=$(printf '%s\n' "${times[@]}" | sort -n | tail -1)
echo
echo "| file | piece | seed rate | reads | median s | max s |"
echo "|---|---|---|---|---|---|"
echo "| $BYTES B | $PIECE | $RATE/s | $RUNS | $median | $max |"
