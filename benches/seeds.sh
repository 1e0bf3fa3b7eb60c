#!/usr/bin/env bash
# More seeds, faster newcomers: a 256 MiB single-file torrent, N Spore seeds (1, 2, 4, 8 by default) each
# capped at 20 MB/s upload, and one newcomer `spore get` finding them through `spore tracker`, all on
# loopback (seed i on 127.0.0.(10+i), the newcomer on 127.0.0.3). Seconds from starting the newcomer to its
# "complete:" line, median of RUNS, and the speed-up against N=1.
#   benches/seeds.sh        (env: SIZE=256M RATE=20000000 SEEDS="1 2 4 8" RUNS=3 PIECE=256K BENCH_DIR=/tmp/spore-seeds)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-256M}
RATE=${RATE:-20000000}
SEEDS=${SEEDS:-1 2 4 8}
RUNS=${RUNS:-3}
PIECE=${PIECE:-256K}
DIR=${BENCH_DIR:-/tmp/spore-seeds}
SPORE=$(pwd)/${SPORE:-target/release/spore}
[ -x "$SPORE" ] || cargo build --release -p spore >&2
mkdir -p "$DIR/seed"
FILE="$DIR/seed/data.bin"
[ -f "$FILE" ] || head -c "$SIZE" /dev/urandom > "$FILE"
BYTES=$(stat -c %s "$FILE")
cat "$FILE" > /dev/null
cd "$DIR"

pids=()
stop() { kill "$1" 2> /dev/null || true; wait "$1" 2> /dev/null || true; }
cleanup() { for p in "${pids[@]}"; do stop "$p"; done; }
trap cleanup EXIT

"$SPORE" tracker --http 127.0.0.1:0 --udp off > tracker.out 2>&1 &
pids+=($!)
until grep -q "HTTP on" tracker.out; do sleep 0.1; done
URL=$(grep -o 'http://[^ ]*' tracker.out)
METRICS=${URL%/announce}/metrics
announces() { curl -s "$METRICS" | awk '/^spore_tracker_announces_total\{protocol="http"\}/ { print $2 }'; }
"$SPORE" create "$FILE" -o t.torrent -t "$URL" --piece-length "$PIECE" --no-date > /dev/null

wait_line() { until grep -q "$2" "$1" 2> /dev/null; do sleep 0.02; done; }
results=$(mktemp)
run() { # seeds, run index
    local n=$1 i=$2 seed_pids=() before start end
    # Old logs go first: a background job truncates its log only once it runs, after wait_line may look.
    rm -rf dl seed*.log get.log && mkdir dl
    before=$(announces)
    for s in $(seq "$n"); do
        "$SPORE" seed t.torrent --data seed --listen "127.0.0.$((10 + s)):0" --max-up "$RATE" --no-dht \
            --no-lsd > "seed$s.log" 2>&1 &
        seed_pids+=($!)
        pids+=($!)
    done
    for s in $(seq "$n"); do wait_line "seed$s.log" "seeding"; done
    # Every seed must be known to the tracker before the newcomer asks it.
    until [ "$(announces)" -ge $((before + n)) ]; do sleep 0.05; done
    start=$(date +%s.%N)
    "$SPORE" get t.torrent -o dl --listen 127.0.0.3:0 --no-seed --no-dht --no-lsd > get.log 2>&1 &
    local get_pid=$!
    pids+=("$get_pid")
    wait_line get.log "complete:"
    end=$(date +%s.%N)
    wait "$get_pid"
    for p in "${seed_pids[@]}"; do stop "$p"; done
    cmp -s dl/data.bin seed/data.bin || { echo "N=$n run $i: downloaded data differs" >&2; exit 1; }
    echo "$n $(echo "$end - $start" | bc -l)" >> "$results"
}

for i in $(seq "$RUNS"); do
    for n in $SEEDS; do
        run "$n" "$i"
    done
done

echo "Newcomer download of $(numfmt --to=iec "$BYTES") from N seeds at $RATE B/s each, median of $RUNS; $(date -u +%F), $(nproc) cores"
echo
echo "| seeds | seconds | MB/s | ideal s (N x cap) | speed-up vs N=1 |"
echo "|---|---|---|---|---|"
base=""
for n in $SEEDS; do
    med=$(awk -v n="$n" '$1 == n { print $2 }' "$results" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    [ -n "$base" ] || base=$med
    awk -v n="$n" -v m="$med" -v b="$BYTES" -v r="$RATE" -v base="$base" \
        'BEGIN { printf "| %d | %.2f | %.1f | %.2f | %.2fx |\n", n, m, b / m / 1e6, b / (n * r), base / m }'
done
echo
echo "raw (seeds seconds):"
cat "$results"
rm -f "$results"
