#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind (repeatable whatever else the machine
# does). Rempart runs under valgrind on core 0 with bench/proxy/rempart.toml (the pool's
# admission gate off: under valgrind the gate would see the origin slow down and challenge);
# the origin (nginx) and wrk run on core 1. After WARMUP seconds of load the counters are
# zeroed, then DURATION of `wrk -t1 -cCONNS` runs; the total instructions of the process are
# divided by the requests wrk completed. Loopback only.
#
#   bench/proxy/callgrind.sh                     # 1 KiB, 256 connections, 8 s
#   CONNS=64 DURATION=10 bench/proxy/callgrind.sh
#   REMPART_BIN=/tmp/old/rempart bench/proxy/callgrind.sh   # another build, same setup
#   TARGET=status bench/proxy/callgrind.sh    # the status page from memory (bench/status's
#                                             # config, its tenant's origin down), 64 connections
#   TARGET=post bench/proxy/callgrind.sh      # a proxied POST of 1 KiB (bench/proxy/post.lua)
#   CLOSE=1 bench/proxy/callgrind.sh          # a new connection per request (Connection: close)
#   TOP=25 bench/proxy/callgrind.sh           # and the functions costing most, inclusive
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
CONNS=${CONNS:-256}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-3}
BODY=${BODY:-1k}
TARGET=${TARGET:-proxy}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v valgrind >/dev/null || need+=(valgrind)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if [ -z "${REMPART_BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked --quiet)
  REMPART_BIN="$root/target/release/rempart"
fi

work=$(mktemp -d /tmp/rempart-cg.XXXXXX)
chmod 755 "$work"; mkdir -p "$work/www"
head -c 1024 /dev/zero | tr '\0' 'a' > "$work/www/1k"
head -c 102400 /dev/zero | tr '\0' 'b' > "$work/www/100k"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

origin_port=$(free_port)
sed -e "s#BENCH_DIR#$work#g" -e "s#PORT#$origin_port#g" "$here/origin.nginx.conf" > "$work/origin.conf"
taskset -c 1 nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
wait_port "$origin_port"

port=$(free_port)
if [ "$TARGET" = status ]; then
  CONNS=${CONNS_STATUS:-64}
  export REMPART_BENCH_TOKEN=callgrind-token-xxxxxxxxxxxxxxxx
  sed -e "s#BENCH_DIR#$work#g" -e "s#ADMIN_PORT#$(free_port)#g" -e "s#DOWN_PORT#$(free_port)#g" \
    -e "s#PORT#$port#g" "$root/bench/status/rempart.toml" > "$work/rempart.toml"
  host=statut.ville.test; path=/
else
  sed -e "s#ORIGIN_PORT#$origin_port#g" -e "s#PORT#$port#g" "$here/rempart.toml" > "$work/rempart.toml"
  # The admission gate off for this count (see the header).
  sed -i -e 's#^servers = \[\(.*\)\]#servers = [\1]\nmax_concurrency = 0#' "$work/rempart.toml"
  host=bench.localhost; path=/$BODY
fi
script=()
if [ "$TARGET" = post ]; then path=/post; script=(-s "$here/post.lua"); fi
if [ -n "${CLOSE:-}" ]; then script+=(-H "Connection: close"); fi
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
  "$REMPART_BIN" run --config "$work/rempart.toml" --no-access-log > "$work/rempart.log" 2>&1 & pids+=($!)
wait_port "$port"
url="http://127.0.0.1:$port$path"
taskset -c 1 wrk -t1 -c"$CONNS" -d"${WARMUP}s" -H "Host: $host" "${script[@]}" "$url" > /dev/null
callgrind_control -z > /dev/null 2>&1
out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Host: $host" "${script[@]}" "$url")
callgrind_control -d > /dev/null 2>&1
requests=$(echo "$out" | awk '/requests in/ {print $1} /^RESULT/ {for (i = 2; i <= NF; i++) if ($i ~ /^requests=/) {sub("requests=", "", $i); print $i}}' | head -1)
non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
dump=$(ls -t "$work"/callgrind.out* | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "requests: $requests (non-2xx: ${non2xx:-0})"
echo "instructions: $total"
awk -v t="$total" -v r="$requests" 'BEGIN { printf "instructions per request: %.1fk\n", t / r / 1000 }'
if [ -n "${TOP:-}" ]; then
  callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | grep -v '^-' | sed -n "1,$((TOP + 20))p"
fi
