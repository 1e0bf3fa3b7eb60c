#!/usr/bin/env bash
# Torrent creation speed: Spore (v1, hybrid, v2) against mktorrent, transmission-create and imdl on the
# same file, warm page cache, median of RUNS. Prints a Markdown table (GB = 10^9 bytes).
#   benches/create.sh                 # 2 GiB file in $BENCH_DIR (default /tmp/spore-bench)
#   SIZE=1G RUNS=5 benches/create.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-2G}
RUNS=${RUNS:-3}
PIECE=${PIECE:-2097152}
DIR=${BENCH_DIR:-/tmp/spore-bench}
SPORE=${SPORE:-target/release/spore}
[ -x "$SPORE" ] || cargo build --release -p spore >&2
mkdir -p "$DIR"
FILE="$DIR/data-$SIZE.bin"
[ -f "$FILE" ] || head -c "$SIZE" /dev/urandom > "$FILE"
BYTES=$(stat -c %s "$FILE")
cat "$FILE" > /dev/null; cat "$FILE" > /dev/null
LOG2=$(awk -v p="$PIECE" 'BEGIN { print int(log(p)/log(2) + 0.5) }')
OUT="$DIR/out.torrent"

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
time_cmd() { # name, command...
    local name=$1; shift
    local t=()
    for _ in $(seq "$RUNS"); do
        rm -f "$OUT"
        local start end
        start=$(date +%s.%N)
        "$@" > /dev/null 2>&1
        end=$(date +%s.%N)
        t+=("$(echo "$end - $start" | bc -l)")
    done
    printf '%s\n' "${t[@]}" | median | awk -v n="$name" -v b="$BYTES" '{ printf "%s %.3f %.3f\n", n, $1, b / $1 / 1e9 }'
}

results=$(mktemp)
time_cmd "spore-v1" "$SPORE" create "$FILE" -o "$OUT" --v1 --piece-length "$PIECE" --no-date >> "$results"
time_cmd "spore-hybrid" "$SPORE" create "$FILE" -o "$OUT" --hybrid --piece-length "$PIECE" --no-date >> "$results"
time_cmd "spore-v2" "$SPORE" create "$FILE" -o "$OUT" --v2 --piece-length "$PIECE" --no-date >> "$results"
command -v mktorrent > /dev/null && time_cmd "mktorrent-t2" mktorrent -t 2 -l "$LOG2" -o "$OUT" "$FILE" >> "$results"
command -v transmission-create > /dev/null && time_cmd "transmission-create" transmission-create -s $((PIECE / 1024)) -o "$OUT" "$FILE" >> "$results"
IMDL=$(command -v imdl || echo "$HOME/.cargo/bin/imdl")
[ -x "$IMDL" ] && time_cmd "imdl" "$IMDL" torrent create --piece-length "$PIECE" --output "$OUT" --input "$FILE" --force --no-created-by >> "$results"

# Same piece hashes as mktorrent?
"$SPORE" create "$FILE" -o "$DIR/spore.torrent" --v1 --piece-length "$PIECE" --no-date > /dev/null
mktorrent -t 2 -l "$LOG2" -o "$DIR/mk.torrent" "$FILE" > /dev/null 2>&1 || true
same=$(python3 - "$DIR/spore.torrent" "$DIR/mk.torrent" <<'PY'
import sys
def pieces(path):
    b = open(path, 'rb').read()
    i = b.index(b'6:pieces') + 8
    j = b.index(b':', i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n]
try:
    print("yes" if pieces(sys.argv[1]) == pieces(sys.argv[2]) else "no")
except Exception as e:
    print("unknown (%s)" % e)
PY
)

v1=$(awk '$1 == "spore-v1" { print $3 }' "$results")
echo "Torrent creation, $(numfmt --to=iec "$BYTES") file, ${PIECE}-byte pieces, warm cache, median of $RUNS; $(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "| tool | seconds | GB/s | Spore v1 is ×faster |"
echo "|---|---|---|---|"
while read -r name secs rate; do
    awk -v n="$name" -v s="$secs" -v r="$rate" -v v="$v1" 'BEGIN { printf "| %s | %.3f | %.2f | %.2f |\n", n, s, r, v / r }'
done < "$results"
echo
echo "Spore v1 and mktorrent piece hashes identical: $same"
rm -f "$results"
