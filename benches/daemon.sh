#!/usr/bin/env bash
# The daemon seeding many small torrents: peak RSS, CPU while idle, and the time a restart takes to have
# every torrent seeding again (fast resume, no rehash).
#   benches/daemon.sh            (env: COUNT=1000 SIZE=65536 IDLE=30)
set -euo pipefail
cd "$(dirname "$0")/.."
SPORE=$(pwd)/${SPORE:-target/release/spore}
COUNT=${COUNT:-1000}
SIZE=${SIZE:-65536}
IDLE=${IDLE:-30}
[ -x "$SPORE" ] || cargo build --release -p spore >&2
work=$(mktemp -d)
trap 'pkill -P $$ 2> /dev/null || true; rm -rf "$work"' EXIT
API=127.0.0.1:$(( $$ % 20000 + 30000 ))

mkdir -p "$work/data" "$work/torrents"
echo "making $COUNT torrents of $SIZE bytes..." >&2
for i in $(seq "$COUNT"); do
    head -c "$SIZE" /dev/urandom > "$work/data/f$i.bin"
    "$SPORE" create "$work/data/f$i.bin" -o "$work/torrents/f$i.torrent" --no-date > /dev/null
done

start_daemon() {
    SPORE_LOG=warn,spore=info "$SPORE" daemon --state-dir "$work/state" --listen 127.0.0.1:0 --api "$API" \
        --download-dir "$work/data" --no-dht > "$work/daemon.out" 2> "$work/daemon.err" &
    pid=$!
    until grep -q "api listening" "$work/daemon.out" 2> /dev/null; do sleep 0.02; done
}

# Seconds until every torrent is seeding.
wait_seeding() {
    local t0=$1
    until [ "$("$SPORE" list --api "$API" --state-dir "$work/state" --json |
        python3 -c 'import json,sys; t=json.load(sys.stdin)["torrents"]; print(sum(x["state"]=="seeding" for x in t))')" = "$COUNT" ]; do
        sleep 0.05
    done
    python3 -c "import time; print(f'{time.time() - $t0:.2f}')"
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }

start_daemon
t0=$(python3 -c 'import time; print(time.time())')
for i in $(seq "$COUNT"); do
    "$SPORE" add "$work/torrents/f$i.torrent" --api "$API" --state-dir "$work/state" > /dev/null
done
echo "added and checked $COUNT torrents in $(wait_seeding "$t0") s" >&2

sleep 3
before=$(cpu_ticks)
sleep "$IDLE"
after=$(cpu_ticks)
hz=$(getconf CLK_TCK)
idle_cpu=$(python3 -c "print(f'{100 * ($after - $before) / $hz / $IDLE:.2f}')")
rss=$(awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid" || true

t0=$(python3 -c 'import time; print(time.time())')
start_daemon
restart=$(wait_seeding "$t0")
rss_after=$(awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$pid/status")
fast=$(grep -c "fast resume" "$work/daemon.err" || true)
kill -TERM "$pid"; wait "$pid" || true

echo
echo "| torrents | peak RSS MiB | CPU idle % (over ${IDLE} s) | restart to all seeding s | RSS after restart MiB | fast resumes |"
echo "|---|---|---|---|---|---|"
echo "| $COUNT | $rss | $idle_cpu | $restart | $rss_after | $fast |"
