#!/usr/bin/env bash
# Shield overhead with no attack: Rempart with every per-request defence on vs off, same
# origin (nginx, static 1 KiB), same run, interleaved; wrk with 64 keep-alive connections.
# Gateways on core 0, wrk and the origin on core 1. Prints medians and the on/off ratio.
#
#   DURATION=10s RUNS=5 bench/flood/overhead.sh        # CONNS=256 for 256 connections
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-10s}
RUNS=${RUNS:-5}
CONNS=${CONNS:-64}
command -v wrk >/dev/null && command -v nginx >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light; }
(cd "$root" && cargo build --release --locked --quiet)
work=$(mktemp -d /tmp/rempart-overhead.XXXXXX); chmod 755 "$work"; mkdir -p "$work/www"
head -c 1024 /dev/zero | tr '\0' 'a' > "$work/www/1k"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

origin=$(free_port)
sed -e "s#BENCH_DIR#$work#g" -e "s#PORT#$origin#g" "$root/bench/proxy/origin.nginx.conf" > "$work/origin.conf"
taskset -c 1 nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
wait_port "$origin"
declare -A port
for variant in on off; do
  port[$variant]=$(free_port)
  sed -e "s#ORIGIN_PORT#$origin#g" -e "s#PORT#${port[$variant]}#g" "$here/shield-$variant.toml" > "$work/$variant.toml"
  taskset -c 0 "$root/target/release/rempart" run --config "$work/$variant.toml" --no-access-log > "$work/$variant.log" 2>&1 & pids+=($!)
  wait_port "${port[$variant]}"
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s -H "Host: bench.localhost" "http://127.0.0.1:${port[$variant]}/1k" > /dev/null
done
for run in $(seq 1 "$RUNS"); do
  for variant in on off; do
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" -H "Host: bench.localhost" -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0" -H "Accept: text/html" -H "Accept-Language: fr" "http://127.0.0.1:${port[$variant]}/1k")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    bad=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    echo "$variant $rps ${bad:-0}" >> "$work/rps"
    echo "run $run shield $variant: $rps req/s, non-2xx ${bad:-0}" >&2
  done
done
python3 - "$work/rps" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
on = statistics.median(float(r[1]) for r in rows if r[0] == "on")
off = statistics.median(float(r[1]) for r in rows if r[0] == "off")
bad = sum(int(r[2]) for r in rows)
print(f"shield on: {on:,.0f} req/s (median), shield off: {off:,.0f} req/s, on/off = {on/off:.3f}; non-2xx answers in all runs: {bad}")
if bad:
    sys.exit("a request was refused or challenged: the comparison is void")
PY
