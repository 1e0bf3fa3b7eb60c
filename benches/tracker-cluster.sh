#!/usr/bin/env bash
# Tracker nodes on a Redis Cluster (issue 17): aquatic_udp_load_test against, in one session,
#   memory   one `spore tracker` keeping its swarms in memory,
#   cluster  one node on a 3 master + 3 replica Redis Cluster (redis-server, loopback),
#   two      two nodes on that cluster sharing the UDP port (SO_REUSEPORT spreads the tester's sockets),
# RUNS rounds of the three, alternating. Every tracker node has one UDP worker on TRACKER_CPUS, the load
# tester LOAD_CPUS, the six redis-servers REDIS_CPUS. Prints responses/s and, per run, what the cluster
# did per announce: script calls (the nodes' spore_tracker_cluster_requests_total, and EVALSHA calls in
# the masters' INFO commandstats), round trips (spore_tracker_cluster_batches_total: a set of requests
# written together and waited for once), announces answered from the view, and CPU seconds.
# Needs `cargo install aquatic_udp_load_test --version 0.9.0 --locked`, redis-server and redis-cli.
#   benches/tracker-cluster.sh    (env: RUNS=3 DURATION=20 SUMMARIZE=15 TRACKER_CPUS=0 LOAD_CPUS=1
#                                  REDIS_CPUS=0,1 TOML=extra tracker settings, KINDS="memory cluster
#                                  two", clusterb: one node with TOML_B and SPORE_B instead (another
#                                  build, to compare two in one session), PERF=FILE: a perf
#                                  profile of the one cluster node, REDIS_PERF=FILE: its
#                                  masters, COMMANDSTATS=FILE: the masters' INFO)
set -euo pipefail
cd "$(dirname "$0")/.."
# Relative paths are the checkout's (an absolute one is taken as it is: prefixing it named no file,
# and the first node then never answered).
SPORE=${SPORE:-target/release/spore}
case $SPORE in /*) ;; *) SPORE=$(pwd)/$SPORE ;; esac
SPORE_B=${SPORE_B:-$SPORE}
case $SPORE_B in /*) ;; *) SPORE_B=$(pwd)/$SPORE_B ;; esac
RUNS=${RUNS:-3}
DURATION=${DURATION:-20}
SUMMARIZE=${SUMMARIZE:-15}
TRACKER_CPUS=${TRACKER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
REDIS_CPUS=${REDIS_CPUS:-0,1}
[ -x "$SPORE" ] || cargo build --release -p spore >&2
for tool in aquatic_udp_load_test redis-server redis-cli; do
    command -v "$tool" > /dev/null || { echo "$tool is needed" >&2; exit 1; }
done
work=$(mktemp -d)
BASE=$(( 20000 + $$ % 2000 * 6 ))   # redis ports BASE..BASE+5, bus ports +10000
UDP=$(( BASE + 6 ))
HTTP1=$(( BASE + 7 ))
HTTP2=$(( BASE + 8 ))
cleanup() {
    for p in "$work"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2> /dev/null || true; done
    for i in 0 1 2 3 4 5; do redis-cli -p $(( BASE + i )) shutdown nosave > /dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The cluster.
ports=()
for i in 0 1 2 3 4 5; do
    port=$(( BASE + i ))
    ports+=("127.0.0.1:$port")
    mkdir -p "$work/redis-$port"
    taskset -c "$REDIS_CPUS" redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
        --cluster-config-file nodes.conf --dir "$work/redis-$port" --save '' --appendonly no \
        --logfile redis.log --repl-diskless-sync-delay 0 --daemonize yes
done
for i in 0 1 2 3 4 5; do
    until redis-cli -p $(( BASE + i )) ping 2> /dev/null | grep -q PONG; do sleep 0.1; done
done
redis-cli --cluster create "${ports[@]}" --cluster-replicas 1 --cluster-yes > "$work/create.log"
for i in 0 1 2 3 4 5; do
    until redis-cli -p $(( BASE + i )) cluster info | grep -q cluster_state:ok; do sleep 0.1; done
done
CLUSTER="redis://$(IFS=,; echo "${ports[*]}")"
masters() { for i in 0 1 2 3 4 5; do
    redis-cli -p $(( BASE + i )) role | head -1 | grep -q master && echo $(( BASE + i )); done; true; }
redis_cpu() { # CPU seconds so far of the servers on the ports given
    for p in "$@"; do redis-cli -p "$p" info cpu; done |
        awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.2f", s }'
}
replicas() { for i in 0 1 2 3 4 5; do
    redis-cli -p $(( BASE + i )) role | head -1 | grep -q slave && echo $(( BASE + i )); done; true; }

# The load tester: its default mix (1 M torrents, 2 M peers, connect 50 : announce 50 : scrape 1 of up
# to 10 info-hashes, numwant 30; every announce is `started` or `completed`), one worker, 8 sockets.
aquatic_udp_load_test -p > "$work/load.toml"
sed -i "s/^server_address = .*/server_address = \"127.0.0.1:$UDP\"/; s/^workers = .*/workers = 1/;
    s/^duration = .*/duration = $DURATION/; s/^summarize_last = .*/summarize_last = $SUMMARIZE/;
    s/^extra_statistics = .*/extra_statistics = false/; s/^sockets_per_worker = .*/sockets_per_worker = 8/" \
    "$work/load.toml"

node_toml() { # http port, cluster or "", extra settings
    printf 'http = "127.0.0.1:%s"\nudp = "127.0.0.1:%s"\nudp_workers = 1\nswarm_creation_burst = 0\n' \
        "$1" "$UDP"
    [ -n "$2" ] && printf 'cluster = "%s"\n' "$2"
    printf '%s\n' "$3"
}
metric() { # http port, name: the value summed over labels
    curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $2 } END { print s + 0 }'
}
cpu_of() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
start_node() { # name, http port, cluster or "", extra settings, binary
    node_toml "$2" "$3" "$4" > "$work/$1.toml"
    taskset -c "$TRACKER_CPUS" "${5:-$SPORE}" tracker --config "$work/$1.toml" > "$work/$1.out" 2>&1 &
    echo $! > "$work/$1.pid"
    until curl -s "http://127.0.0.1:$2/metrics" > /dev/null; do sleep 0.1; done
}
stop_node() { kill "$(cat "$work/$1.pid")"; wait "$(cat "$work/$1.pid")" 2> /dev/null || true; rm "$work/$1.pid"; }

run() { # kind: memory | cluster | two | clusterb (one node with TOML_B)
    local kind=$1 nodes=(n1) cluster="" toml=${TOML:-} spore=$SPORE
    [ "$kind" = two ] && nodes=(n1 n2)
    [ "$kind" != memory ] && cluster=$CLUSTER
    [ "$kind" = clusterb ] && toml=${TOML_B:-} && spore=$SPORE_B
    start_node n1 "$HTTP1" "$cluster" "$toml" "$spore"
    [ "$kind" = two ] && start_node n2 "$HTTP2" "$cluster" "$toml"
    local ms rs; ms=$(masters); rs=$(replicas)
    for m in $ms; do redis-cli -p "$m" config resetstat > /dev/null; done
    local mcpu0 rcpu0; mcpu0=$(redis_cpu $ms); rcpu0=$(redis_cpu $rs)
    local perf_pid="" rperf_pid=""
    if [ -n "${PERF:-}" ] && [ "$kind" = cluster ]; then
        perf record -g -o "$work/perf.data" -p "$(cat "$work/n1.pid")" > /dev/null 2>&1 &
        perf_pid=$!
    fi
    if [ -n "${REDIS_PERF:-}" ] && [ "$kind" = cluster ]; then
        local mpids; mpids=$(for m in $ms; do redis-cli -p "$m" info server |
            awk -F: '/^process_id:/ { print $2 }' | tr -d '\r'; done | paste -sd,)
        perf record -g -o "$work/rperf.data" -p "$mpids" > /dev/null 2>&1 &
        rperf_pid=$!
    fi
    local rps
    rps=$(taskset -c "$LOAD_CPUS" aquatic_udp_load_test -c "$work/load.toml" 2>&1 | tee "$work/$kind.load" |
        awk '/Average responses per second/ { print $NF }')
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid"; wait "$perf_pid" 2> /dev/null || true
        cp "$work/perf.data" "${PERF}.data"
        { perf report -i "$work/perf.data" --no-children --sort comm,dso --stdio 2> /dev/null
          perf report -i "$work/perf.data" --no-children --sort sym --percent-limit 0.7 --stdio -g none 2> /dev/null
        } | grep -E '^ +[0-9]' > "${PERF}" || true
    fi
    if [ -n "$rperf_pid" ]; then
        kill -INT "$rperf_pid"; wait "$rperf_pid" 2> /dev/null || true
        cp "$work/rperf.data" "${REDIS_PERF}.data"
        perf report -i "$work/rperf.data" --no-children --sort sym --percent-limit 0.5 --stdio -g none \
            2> /dev/null | grep -E '^ +[0-9]' > "${REDIS_PERF}" || true
    fi
    local stats; stats=$(for m in $ms; do redis-cli -p "$m" info commandstats; done)
    [ -n "${COMMANDSTATS:-}" ] && [ "$kind" != memory ] && echo "$stats" | tr -d '\r' >> "$COMMANDSTATS"
    local evalsha; evalsha=$(echo "$stats" | awk -F'[=,:]' '/^cmdstat_evalsha:/ { s += $3 } END { print s + 0 }')
    local us; us=$(echo "$stats" | awk -F'[=,:]' '/^cmdstat_evalsha:/ { c += $3; u += $5 } END { printf "%.1f", c ? u / c : 0 }')
    local rcpu; rcpu=$(awk -v a="$mcpu0" -v b="$(redis_cpu $ms)" -v c="$rcpu0" -v d="$(redis_cpu $rs)" \
        'BEGIN { printf "%.1f+%.1f", b - a, d - c }')
    local ann=0 req=0 bat=0 view=0 tcpu=0 split=""
    local i=0
    for n in "${nodes[@]}"; do
        local port=$HTTP1; [ $i = 1 ] && port=$HTTP2
        local a; a=$(metric "$port" spore_tracker_announces_total)
        ann=$(( ann + a )); split="$split${split:+/}$a"
        req=$(( req + $(metric "$port" spore_tracker_cluster_requests_total) ))
        bat=$(( bat + $(metric "$port" spore_tracker_cluster_batches_total) ))
        view=$(( view + $(metric "$port" spore_tracker_cluster_view_answers_total) ))
        tcpu=$(awk -v a="$tcpu" -v b="$(cpu_of "$(cat "$work/$n.pid")")" 'BEGIN { printf "%.1f", a + b }')
        i=$(( i + 1 ))
    done
    for n in "${nodes[@]}"; do stop_node "$n"; done
    awk -v k="$kind" -v r="$rps" -v a="$ann" -v q="$req" -v b="$bat" -v v="$view" -v e="$evalsha" \
        -v t="$tcpu" -v c="$rcpu" -v s="$split" -v u="$us" 'BEGIN {
        a = a > 0 ? a : 1
        printf "%s %.0f %d %.3f %.3f %.3f %.3f %s %s %s %s\n", k, r, a, q / a, b / a, v / a, e / a, t, c, s, u }'
}

echo "kind responses/s announces calls/ann roundtrips/ann view/ann evalsha/ann tracker_cpu_s redis_cpu_s(masters+replicas) per_node evalsha_us" \
    | tee "$work/results"
for _ in $(seq "$RUNS"); do
    for kind in ${KINDS:-memory cluster two}; do run "$kind"; done
done | tee -a "$work/results"
echo
echo "| run | responses/s (runs) | median | vs memory | script calls / announce | round trips / announce | from the view | tracker CPU s | redis CPU s (masters+replicas) |"
echo "|---|---|---|---|---|---|---|---|---|"
median() { sort -n | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mem=$(awk '$1 == "memory" { print $2 }' "$work/results" | median)
for kind in ${KINDS:-memory cluster two}; do
    med=$(awk -v k="$kind" '$1 == k { print $2 }' "$work/results" | median)
    awk -v k="$kind" -v m="$med" -v mem="$mem" '$1 == k {
        r = r (r ? "; " : "") $2; c = c (c ? ", " : "") $4; b = b (b ? ", " : "") $5
        v = v (v ? ", " : "") $6; t = t (t ? ", " : "") $8; x = x (x ? ", " : "") $9
        if (k == "two") r = r " (" $10 ")"
    } END { printf "| %s | %s | %.0f | %.0f %% | %s | %s | %s | %s | %s |\n", k, r, m, 100 * m / mem, c, b, v, t, x }' \
        "$work/results"
done
