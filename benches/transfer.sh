#!/usr/bin/env bash
# One seeder, one downloader, a 1 GiB single-file torrent on loopback, through `spore tracker`:
# Spore→Spore, libtorrent→libtorrent, aria2→aria2 in the same run, median of RUNS. Seeder on 127.0.0.2,
# downloader on 127.0.0.3; the seeder's file is in the page cache; each download starts from nothing.
# Pairs: spore (over TCP), spore-utp (both --transports utp), libtorrent (TCP), libtorrent-utp
# (TCP off both ways), aria2 (TCP; it has no uTP).
#   benches/transfer.sh            (env: SIZE=1G RUNS=3 PIECE=1M BENCH_DIR=/tmp/spore-transfer
#                                   PAIRS="spore libtorrent aria2")
# Spore pairs: `spore` runs both with their defaults (--encryption prefer: RC4 between two Spores);
# `spore-rc4` and `spore-plain` pass --encryption require / off to both, for the cost of encryption;
# `spore-utp-plain` is `spore-utp` with --encryption off (uTP against `spore-plain`, TCP, both plaintext).
# `libtorrent-rc4` forces MSE with RC4 on both libtorrents (`libtorrent` is plaintext between the two).
# LINK=RATE (tc's units: 1gbit, 2500mbit) moves the pair off loopback onto a link of that rate: two network
# namespaces made for the run (seeder and tracker in one, downloader in the other, 10.201.0.1 and .2) and a
# veth pair between them with a token bucket (tbf) on each side's egress. Needs root, `ip` and `tc`.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1G}
RUNS=${RUNS:-3}
PAIRS=${PAIRS:-spore libtorrent aria2}
PIECE=${PIECE:-1M}
DIR=${BENCH_DIR:-/tmp/spore-transfer}
SPORE=$(pwd)/${SPORE:-target/release/spore}
LT=$(pwd)/crates/spore/tests/interop/lt_peer.py
[ -x "$SPORE" ] || cargo build --release -p spore >&2
mkdir -p "$DIR/seed"
FILE="$DIR/seed/data.bin"
[ -f "$FILE" ] || head -c "$SIZE" /dev/urandom > "$FILE"
BYTES=$(stat -c %s "$FILE")
cat "$FILE" > /dev/null
cd "$DIR"

SEED_IP=127.0.0.2 GET_IP=127.0.0.3 IN_SEED=() IN_GET=()
if [ -n "${LINK:-}" ]; then
    NS_SEED=spore-xfer-s-$$ NS_GET=spore-xfer-g-$$
    SEED_IP=10.201.0.1 GET_IP=10.201.0.2
    IN_SEED=(ip netns exec "$NS_SEED") IN_GET=(ip netns exec "$NS_GET")
fi
pids=()
# Stops what /usr/bin/time runs (killing time itself would orphan the program and lose the report); a
# process started without time (the tracker) has no children and is stopped itself, else the wait hangs.
stop() { pkill -P "$1" 2> /dev/null || kill "$1" 2> /dev/null || true; wait "$1" 2> /dev/null || true; }
cleanup() {
    for p in "${pids[@]}"; do stop "$p"; done
    if [ -n "${LINK:-}" ]; then ip netns del "$NS_SEED" 2> /dev/null || true; ip netns del "$NS_GET" 2> /dev/null || true; fi
}
trap cleanup EXIT
if [ -n "${LINK:-}" ]; then
    ip netns add "$NS_SEED"
    ip netns add "$NS_GET"
    ip link add xfer-s netns "$NS_SEED" type veth peer name xfer-g netns "$NS_GET"
    for side in "$NS_SEED xfer-s $SEED_IP" "$NS_GET xfer-g $GET_IP"; do
        set -- $side
        ip -n "$1" link set lo up
        ip -n "$1" addr add "$3/24" dev "$2"
        ip -n "$1" link set "$2" up
        # A burst of a few ms at the rate (tbf needs at least one timer tick's worth) and 20 ms of queue.
        ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$LINK" burst 1mb latency 20ms
    done
fi

# A previous run's log would answer the wait below before this tracker truncates it, with a dead URL.
rm -f tracker.out
"${IN_SEED[@]}" "$SPORE" tracker --http "$SEED_IP:0" --udp off > tracker.out 2>&1 &
pids+=($!)
until grep -q "HTTP on" tracker.out 2> /dev/null; do sleep 0.1; done
URL=$(grep -o 'http://[^ ]*' tracker.out)
"$SPORE" create "$FILE" -o t.torrent -t "$URL" --piece-length "$PIECE" --no-date > /dev/null

wait_line() { until grep -q "$2" "$1" 2> /dev/null; do sleep 0.05; done; }
# Runs a command under /usr/bin/time -v, in the background; the caller waits for its log.
# Sets LAST_PID (not a command substitution: the process must stay a child of this shell).
timed() { local log=$1; shift; /usr/bin/time -v -o "$log.time" "$@" > "$log" 2>&1 & LAST_PID=$!; pids+=("$LAST_PID"); }
rss() { awk -F': ' '/Maximum resident/ { printf "%d", $2 / 1024 }' "$1.time" 2> /dev/null || echo "?"; }
cpu() { awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.2f", u + s }' "$1.time" 2> /dev/null || echo "?"; }

results=$(mktemp)
run_pair() { # name, run index
    local name=$1 i=$2 seed_pid get_pid start end
    rm -rf dl && mkdir dl && sync
    local enc=() transports=tcp
    case $name in spore-rc4) enc=(--encryption require) ;; spore-plain | spore-utp-plain) enc=(--encryption off) ;; esac
    case $name in *-utp | *-utp-plain) transports=utp ;; esac
    case $name in
    spore | spore-rc4 | spore-plain | spore-utp | spore-utp-plain)
        timed seed.log "${IN_SEED[@]}" "$SPORE" seed t.torrent --data seed --listen "$SEED_IP:0" --transports $transports "${enc[@]}"
        seed_pid=$LAST_PID
        wait_line seed.log "seeding"
        start=$(date +%s.%N)
        timed get.log "${IN_GET[@]}" "$SPORE" get t.torrent -o dl --listen "$GET_IP:0" --no-seed --transports $transports "${enc[@]}"
        get_pid=$LAST_PID
        wait "$get_pid"
        end=$(date +%s.%N)
        ;;
    libtorrent | libtorrent-utp | libtorrent-rc4)
        export LT_TRANSPORTS=$transports LT_ENCRYPTION=default
        if [ "$name" = libtorrent-rc4 ]; then LT_ENCRYPTION=rc4; fi
        timed seed.log "${IN_SEED[@]}" /usr/bin/python3 "$LT" seed t.torrent seed "$SEED_IP"
        seed_pid=$LAST_PID
        wait_line seed.log '"done"'
        # Let it announce before the downloader asks the tracker.
        until "${IN_SEED[@]}" curl -s "$URL" > /dev/null 2>&1 && grep -q . seed.log; do sleep 0.1; done
        sleep 1
        start=$(date +%s.%N)
        timed get.log "${IN_GET[@]}" /usr/bin/python3 "$LT" get t.torrent dl "$GET_IP"
        get_pid=$LAST_PID
        wait_line get.log '"done"'
        end=$(date +%s.%N)
        # libtorrent reports the torrent complete once every piece is hashed, which can be before its
        # last blocks reach the file: stopping it at once left files short of them at 2.5 Gbit/s.
        for _ in $(seq 300); do cmp -s dl/data.bin seed/data.bin && break; sleep 0.2; done
        stop "$get_pid"
        ;;
    aria2)
        local common=(--enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false
            --file-allocation=none --summary-interval=0 --console-log-level=warn --bt-tracker-connect-timeout=5)
        timed seed.log "${IN_SEED[@]}" aria2c "${common[@]}" --interface="$SEED_IP" --listen-port=51600-51699 -V \
            --bt-hash-check-seed=true --seed-ratio=0.0 --seed-time=600 -d seed t.torrent
        seed_pid=$LAST_PID
        sleep 3 # aria2 prints nothing when its recheck ends; give it time to hash and announce
        start=$(date +%s.%N)
        timed get.log "${IN_GET[@]}" aria2c "${common[@]}" --interface="$GET_IP" --listen-port=51700-51799 \
            --seed-time=0 -d dl t.torrent
        get_pid=$LAST_PID
        wait "$get_pid"
        end=$(date +%s.%N)
        ;;
    esac
    stop "$seed_pid"
    if ! cmp -s dl/data.bin seed/data.bin; then
        echo "$name run $i: downloaded data differs" >&2
        # A Spore pair that delivers wrong data is a bug to stop on; another client's is reported and
        # left out of its figures.
        case $name in spore*) exit 1 ;; *) return ;; esac
    fi
    echo "$name $(echo "$end - $start" | bc -l) $(rss seed.log) $(rss get.log) $(cpu seed.log) $(cpu get.log)" >> "$results"
}

for i in $(seq "$RUNS"); do
    for pair in $PAIRS; do
        run_pair "$pair" "$i"
    done
done

WHERE=${LINK:+"a $LINK veth link (tbf)"}
echo "Transfer of $(numfmt --to=iec "$BYTES") on ${WHERE:-loopback} through spore tracker, median of $RUNS; $(date -u +%F), $(nproc) cores; load $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "| pair | seconds | GB/s | seeder peak RSS MiB | downloader peak RSS MiB | seeder CPU s/GiB | downloader CPU s/GiB |"
echo "|---|---|---|---|---|---|---|"
for pair in $PAIRS; do
    grep "^$pair " "$results" | sort -k2 -n | awk -v b="$BYTES" 'NR == 0 { } { a[NR] = $0 } END { split(a[int((NR + 1) / 2)], f, " "); g = b / 1073741824; printf "| %s→%s | %.2f | %.2f | %s | %s | %.2f | %.2f |\n", f[1], f[1], f[2], b / f[2] / 1e9, f[3], f[4], f[5] / g, f[6] / g }'
done
echo
echo "raw (pair seconds seedRSS getRSS seedCPU getCPU):"
cat "$results"
rm -f "$results"
