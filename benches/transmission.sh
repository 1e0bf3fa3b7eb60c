#!/usr/bin/env bash
# Transmission→Transmission against Spore→Spore, one seeder and one downloader, through `spore tracker`.
# Transmission 3.00 never dials a loopback address it learns from a tracker, so this runs in a private
# network namespace (unshare -n; needs root) where the peers have addresses 10.99.0.x on its `lo`:
# they are not 127/8, and nothing can leave the namespace. Seconds from adding the torrent to the
# downloader until it reports 100 % (Transmission) or exits (Spore, after its fsync), median of RUNS.
#   benches/transmission.sh        (env: SIZE=256M RUNS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != "--inside" ]; then
    [ -x target/release/spore ] || cargo build --release -p spore >&2
    exec unshare -n "$0" --inside
fi
SPORE=$(pwd)/target/release/spore
SIZE=${SIZE:-256M}
RUNS=${RUNS:-3}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2> /dev/null || true; wait 2> /dev/null || true; rm -rf "$W"' EXIT
ip link set lo up
for a in 1 2 3; do ip addr add "10.99.0.$a/32" dev lo; done
mkdir -p "$W/seed"
head -c "$SIZE" /dev/urandom > "$W/seed/data.bin"
BYTES=$(stat -c %s "$W/seed/data.bin")
"$SPORE" tracker --http 10.99.0.1:6969 --udp off > "$W/tracker.out" 2>&1 &
until grep -qs "HTTP on" "$W/tracker.out"; do sleep 0.05; done
"$SPORE" create "$W/seed/data.bin" -o "$W/t.torrent" -t http://10.99.0.1:6969/announce --piece-length 1M \
    --no-date > /dev/null
now() { date +%s.%N; }

transmission_conf() { # dir ip peer-port rpc-port download-dir
    mkdir -p "$1"
    cat > "$1/settings.json" << JSON
{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
 "port-forwarding-enabled": false, "bind-address-ipv4": "$2", "peer-port": $3,
 "peer-port-random-on-start": false, "rpc-port": $4, "rpc-bind-address": "127.0.0.1",
 "rpc-authentication-required": false, "rpc-whitelist-enabled": false, "encryption": 0,
 "download-dir": "$5", "incomplete-dir-enabled": false, "start-added-torrents": true,
 "speed-limit-up-enabled": false, "speed-limit-down-enabled": false}
JSON
}
remote() { transmission-remote "127.0.0.1:$1" "${@:2}"; }
wait_rpc() { until remote "$1" -l > /dev/null 2>&1; do sleep 0.05; done; }

transmission_seed() {
    transmission_conf "$W/c1" 10.99.0.2 51413 9101 "$W/seed"
    transmission-daemon -f -g "$W/c1" > "$W/t1.log" 2>&1 &
    wait_rpc 9101
    remote 9101 -a "$W/t.torrent" -w "$W/seed" > /dev/null
    until remote 9101 -l | sed -n 2p | grep -q "100%"; do sleep 0.1; done
}

run_transmission() {
    rm -rf "$W/dl" "$W/c2" && mkdir -p "$W/dl" && sync
    transmission_conf "$W/c2" 10.99.0.3 51414 9102 "$W/dl"
    transmission-daemon -f -g "$W/c2" > "$W/t2.log" 2>&1 &
    local pid=$!
    wait_rpc 9102
    local start first="" line
    start=$(now)
    remote 9102 -a "$W/t.torrent" -w "$W/dl" > /dev/null
    while line=$(remote 9102 -l | sed -n 2p); ! echo "$line" | grep -q "100%"; do
        # When the first bytes arrived: Transmission waits a while before it dials the peer it got.
        [ -z "$first" ] && ! echo "$line" | grep -q " 0% " && first=$(now)
        sleep 0.05
    done
    local end
    end=$(now)
    kill "$pid"; wait "$pid" 2> /dev/null || true
    cmp -s "$W/dl/data.bin" "$W/seed/data.bin" || { echo "transmission: data differs" >&2; exit 1; }
    echo "transmission $(echo "$end - $start" | bc -l) $(echo "$end - ${first:-$start}" | bc -l)"
}

run_spore() {
    rm -rf "$W/dl" && mkdir -p "$W/dl" && sync
    local start end
    start=$(now)
    "$SPORE" get "$W/t.torrent" -o "$W/dl" --listen 10.99.0.3:0 --no-seed --no-dht --no-lsd > "$W/get.log" 2>&1
    end=$(now)
    cmp -s "$W/dl/data.bin" "$W/seed/data.bin" || { echo "spore: data differs" >&2; exit 1; }
    echo "spore $(echo "$end - $start" | bc -l) $(echo "$end - $start" | bc -l)"
}

results=$W/results
transmission_seed
"$SPORE" seed "$W/t.torrent" --data "$W/seed" --listen 10.99.0.2:0 --no-dht --no-lsd > "$W/seed.log" 2>&1 &
until grep -qs seeding "$W/seed.log"; do sleep 0.05; done
# Both seeds are in the swarm; to keep each pair pure, the other kind's seed is out while a downloader
# runs (Transmission's torrent stopped, which announces `stopped`; Spore's seed frozen with SIGSTOP).
for i in $(seq "$RUNS"); do
    remote 9101 -t all -S > /dev/null   # Transmission seed paused while Spore downloads
    run_spore >> "$results"
    remote 9101 -t all -s > /dev/null
    kill -STOP "$(pgrep -f "spore seed $W/t.torrent")"  # Spore seed frozen while Transmission downloads
    run_transmission >> "$results"
    kill -CONT "$(pgrep -f "spore seed $W/t.torrent")"
done
echo "Transfer of $(numfmt --to=iec "$BYTES") in a private network namespace, median of $RUNS; $(date -u +%F)"
echo
echo "| pair | seconds from add | GB/s | seconds from first byte | GB/s from first byte |"
echo "|---|---|---|---|---|"
for pair in spore transmission; do
    grep "^$pair " "$results" | sort -k2 -n | awk -v b="$BYTES" '{ a[NR] = $0 } END { split(a[int((NR + 1) / 2)], f, " "); printf "| %s→%s | %.2f | %.3f | %.2f | %.3f |\n", f[1], f[1], f[2], b / f[2] / 1e9, f[3], b / f[3] / 1e9 }'
done
echo
echo "raw (pair seconds-from-add seconds-from-first-byte):"
cat "$results"
