#!/usr/bin/env bash
# A seed under hostile peers: `spore seed` of a 200 MiB torrent with 4 MiB pieces on loopback, and a
# legitimate `spore get` of it, RUNS times without and RUNS times with HOSTILE connections of the
# `hostile_peer` example running (half flood requests over every piece without end, half send 500
# and then only keep-alives; none reads a byte; each reconnects when dropped). Reports the seed's peak
# RSS (VmHWM, whole run including the attack) and the download's time, medians of RUNS.
#   benches/hostile-seed.sh        (env: SIZE=200M PIECE=4M HOSTILE=50 RUNS=3 BENCH_DIR=/tmp/spore-hostile
#                                   SPORE=target/release/spore HOSTILE_BIN=target/release/examples/hostile_peer)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-200M}
PIECE=${PIECE:-4M}
HOSTILE=${HOSTILE:-50}
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/tmp/spore-hostile}
SPORE=$(realpath "${SPORE:-target/release/spore}")
HOSTILE_BIN=$(realpath "${HOSTILE_BIN:-target/release/examples/hostile_peer}")
[ -x "$SPORE" ] && [ -x "$HOSTILE_BIN" ] || cargo build --release -p spore --bins --example hostile_peer >&2
mkdir -p "$DIR/seed"
FILE="$DIR/seed/data.bin"
[ -f "$FILE" ] || head -c "$SIZE" /dev/urandom > "$FILE"
BYTES=$(stat -c %s "$FILE")
cat "$FILE" > /dev/null
cd "$DIR"
QUIET=(--no-trackers --no-dht --no-lsd --no-pex)
"$SPORE" create "$FILE" -o t.torrent --piece-length "$PIECE" --no-date > /dev/null
HASH=$("$SPORE" info t.torrent | awk '/Info-hash v1:/ { print $3 }')
PIECES=$("$SPORE" info t.torrent | awk '/^Pieces:/ { print $2 }')
PIECE_BYTES=$("$SPORE" info t.torrent | sed -n 's/^Pieces:.*(\([0-9]*\) bytes).*/\1/p')

pids=()
stop() { kill "$1" 2> /dev/null || true; wait "$1" 2> /dev/null || true; }
cleanup() { for p in "${pids[@]}"; do stop "$p"; done; }
trap cleanup EXIT
wait_line() { # file, text, seconds
    local until=$((SECONDS + $3))
    until grep -q "$2" "$1" 2> /dev/null; do
        [ $SECONDS -lt $until ] || { echo "no '$2' in $1 within $3 s" >&2; exit 1; }
        sleep 0.05
    done
}
hwm() { awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }

results=$(mktemp)
run() { # attacked (0/1), run index
    local attacked=$1 seed_pid hostile_pid start end peak
    rm -rf dl seed.out hostile.out
    "$SPORE" seed t.torrent --data seed --listen 127.0.0.2:0 "${QUIET[@]}" > seed.out 2>&1 &
    seed_pid=$!
    pids+=("$seed_pid")
    wait_line seed.out seeding 60
    local addr
    addr=$(sed -n 's/^listening on //p' seed.out)
    if [ "$attacked" = 1 ]; then
        "$HOSTILE_BIN" "$addr" "$HASH" "$PIECES" "$PIECE_BYTES" "$HOSTILE" > hostile.out 2>&1 &
        hostile_pid=$!
        pids+=("$hostile_pid")
        # Two seconds of attack before the download starts: every hostile peer is connected and
        # has queued far more than the seed keeps for one peer.
        wait_line hostile.out "^sent" 30
        sleep 1
    fi
    start=$(date +%s.%N)
    timeout 300 "$SPORE" get t.torrent -o dl --listen 127.0.0.3:0 --peer "$addr" --no-seed "${QUIET[@]}" > get.out 2>&1
    end=$(date +%s.%N)
    peak=$(hwm "$seed_pid")
    local sent=0
    if [ "$attacked" = 1 ]; then
        sent=$(tail -1 hostile.out | awk '{ print $2 "/" $5 }')
        stop "$hostile_pid"
    fi
    stop "$seed_pid"
    cmp -s dl/data.bin seed/data.bin || { echo "run $2: downloaded data differs" >&2; exit 1; }
    echo "$attacked $(echo "$end - $start" | bc -l) $peak $sent" >> "$results"
}

for i in $(seq "$RUNS"); do
    run 0 "$i"
    run 1 "$i"
done

median() { grep "^$1 " "$results" | sort -k"$2" -n | awk -v f="$2" '{ a[NR] = $f } END { print a[int((NR + 1) / 2)] }'; }
t0=$(median 0 2)
t1=$(median 1 2)
echo "Seed of $(numfmt --to=iec "$BYTES") in $PIECES pieces of $(numfmt --to=iec "$PIECE_BYTES"), $HOSTILE hostile connections; median of $RUNS; $(date -u +%F), $(nproc) cores; load $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "| | download s | MB/s | seed peak RSS MiB (max of runs) |"
echo "|---|---|---|---|"
printf "| unattacked | %.2f | %.0f | %s |\n" "$t0" "$(echo "$BYTES / $t0 / 1000000" | bc -l)" "$(grep '^0 ' "$results" | awk '{ print $3 }' | sort -n | tail -1)"
printf "| %s hostile connections | %.2f | %.0f | %s |\n" "$HOSTILE" "$t1" "$(echo "$BYTES / $t1 / 1000000" | bc -l)" \
    "$(grep '^1 ' "$results" | awk '{ print $3 }' | sort -n | tail -1)"
printf "\nattacked speed: %.0f %% of unattacked\n" "$(echo "100 * $t0 / $t1" | bc -l)"
echo
echo "raw (attacked seconds seedPeakMiB hostileRequests/connections):"
cat "$results"
rm -f "$results"
