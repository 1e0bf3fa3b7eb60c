#!/usr/bin/env bash
# UDP tracker throughput: `spore tracker` against aquatic_udp 0.9.0, each pinned to core 0 with one worker,
# aquatic_udp_load_test (its default request mix, one worker) pinned to core 1, RUNS runs of DURATION s
# each, alternating. Needs `cargo install aquatic_udp aquatic_udp_load_test --version 0.9.0`.
#   benches/tracker-udp.sh         (env: RUNS=5 DURATION=15)
set -euo pipefail
cd "$(dirname "$0")/.."
SPORE=$(pwd)/${SPORE:-target/release/spore}
RUNS=${RUNS:-5}
DURATION=${DURATION:-15}
[ -x "$SPORE" ] || cargo build --release -p spore >&2
work=$(mktemp -d)
trap 'pkill -P $$ 2> /dev/null || true; rm -rf "$work"' EXIT
PORT=3$(( $$ % 9000 + 1000 ))

aquatic_udp -p > "$work/aquatic.toml"
sed -i "s/^socket_workers = .*/socket_workers = 1/; s/^address = .*/address = \"127.0.0.1:$PORT\"/" "$work/aquatic.toml"
# The load test announces its torrents from one address or a few: without swarm_creation_burst = 0 the
# per-source creation limit would leave most swarms uncreated and spore doing less work than aquatic.
printf 'http = ""\nudp = "127.0.0.1:%s"\nudp_workers = 1\nswarm_creation_burst = 0\n' "$PORT" > "$work/spore.toml"
aquatic_udp_load_test -p > "$work/load.toml"
sed -i "s/^server_address = .*/server_address = \"127.0.0.1:$PORT\"/; s/^workers = .*/workers = 1/; s/^duration = .*/duration = $DURATION/" "$work/load.toml"

run() { # name, command...
    local name=$1; shift
    taskset -c 0 "$@" > "$work/$name.out" 2>&1 &
    local pid=$!
    sleep 1
    local rps
    rps=$(taskset -c 1 aquatic_udp_load_test -c "$work/load.toml" 2>&1 | tee "$work/$name.load" |
        awk '/[Rr]esponses per second/ { v = $NF } /total:/ { t = $2 } END { print (v != "" ? v : t) }')
    local rss
    rss=$(awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$pid/status")
    kill "$pid"; wait "$pid" 2> /dev/null || true
    echo "$name $rps $rss"
}

for i in $(seq "$RUNS"); do
    run aquatic aquatic_udp -c "$work/aquatic.toml"
    run spore "$SPORE" tracker --config "$work/spore.toml"
done | tee "$work/results"
echo
echo "| tracker | responses/s (runs) | median | peak RSS MiB (max) |"
echo "|---|---|---|---|"
for t in aquatic spore; do
    awk -v t="$t" '$1 == t { print $2 }' "$work/results" | sort -n |
        awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.0f\n", m }' > "$work/$t.median"
    awk -v t="$t" -v m="$(cat "$work/$t.median")" '$1 == t { r = r (r ? ", " : "") sprintf("%.0f", $2); if ($3 > x) x = $3 }
        END { printf "| %s | %s | %s | %s |\n", t, r, m, x }' "$work/results"
done
awk -v a="$(cat "$work/aquatic.median")" -v s="$(cat "$work/spore.median")" 'BEGIN { printf "\nspore / aquatic (medians): %.2fx\n", s / a }'
echo
echo "last load-test output (spore):"; tail -20 "$work/spore.load"
