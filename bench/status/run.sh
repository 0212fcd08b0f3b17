#!/usr/bin/env bash
# Status-page benchmark.
#  1. Every origin down, the main host flooded from 10,000 addresses (the drill scenario
#     bench/scenarios/status-under-flood.toml): share of residents' status-page readings
#     answered 2xx within 200 ms (target >= 99 %).
#  2. Throughput of the status page alone: Rempart serving it from memory vs nginx serving
#     the static copy Rempart exported, wrk -t1, 64 connections, median of RUNS interleaved
#     runs (target >= 1.0x nginx).
# Rempart / nginx on core 0; drill and wrk on core 1. Every address is loopback.
#
#   bench/status/run.sh            # RUNS=3 DURATION=10s
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
SUT_CORE=${SUT_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
(cd "$root" && cargo build --release --locked --quiet)
bin="$root/target/release/rempart"
ulimit -n 20000 2>/dev/null || true
work=$(mktemp -d /tmp/rempart-status.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

port=$(free_port); admin_port=$(free_port); down_port=$(free_port)
sed -e "s#BENCH_DIR#$work#g" -e "s#ADMIN_PORT#$admin_port#g" -e "s#DOWN_PORT#$down_port#g" -e "s#PORT#$port#g" \
  "$here/rempart.toml" > "$work/rempart.toml"
REMPART_BENCH_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n') \
  taskset -c "$SUT_CORE" "$bin" run --config "$work/rempart.toml" --no-access-log > "$work/rempart.log" 2>&1 &
rempart_pid=$!; pids+=($rempart_pid)
wait_port "$port"
for _ in $(seq 1 50); do [ -f "$work/export/ville/index.html" ] && break; sleep 0.1; done
nginx_port=$(free_port)
sed -e "s#BENCH_DIR#$work#g" -e "s#PORT#$nginx_port#g" "$here/nginx.conf" > "$work/nginx.conf"
taskset -c "$SUT_CORE" nginx -c "$work/nginx.conf" -p "$work" -g "daemon off;" & pids+=($!)
wait_port "$nginx_port"

echo "== 1. status page under flood, origins down"
flood="$work/flood.json"
taskset -c "$LOAD_CORE" "$bin" drill --target "127.0.0.1:$port" --scenario "$root/bench/scenarios/status-under-flood.toml" \
  --pid "$rempart_pid" --json > "$flood"
python3 - "$flood" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
g = r.get("gateway") or {}
secs = r["duration_s"] or 1
print(f"residents' status-page readings 2xx within 200 ms: {r['legit_success_pct']:.2f} % of {r['legit_loads']} "
      f"(p50 {r['legit_p50_ms']} ms, p99 {r['legit_p99_ms']} ms; {r['legit_failed_status']} non-2xx, {r['legit_too_slow']} slow, {r['legit_errors']} errors); "
      f"flood {r['attack_rate']:.0f} req/s; gateway {g.get('cpu_seconds', 0) / secs:.2f} cores, peak RSS {g.get('peak_rss_mib', 0):.0f} MiB")
PY

echo "== 2. status page throughput: Rempart (from memory) vs nginx (exported static copy)"
results="$work/results.txt"; : > "$results"
for target in rempart nginx; do
  p=$port; [ $target = nginx ] && p=$nginx_port
  taskset -c "$LOAD_CORE" wrk -t1 -c64 -d2s -H "Host: statut.ville.test" "http://127.0.0.1:$p/" > /dev/null 2>&1
done
# Rows: the page as is (identity), the page and the JSON summary gzip-compressed (what
# browsers and widgets ask for).
for row in "/ identity" "/ gzip" "/summary.json gzip"; do
  set -- $row; path=$1; enc=$2
  for run in $(seq 1 "$RUNS"); do
    for target in rempart nginx; do
      p=$port; [ $target = nginx ] && p=$nginx_port
      taskset -c "$LOAD_CORE" wrk -t1 -c64 -d"$DURATION" -H "Host: statut.ville.test" -H "Accept-Encoding: $enc" \
        -s "$root/bench/proxy/report.lua" "http://127.0.0.1:$p$path" > "$work/wrk.out" 2>&1
      line=$(grep '^RESULT' "$work/wrk.out" || { cat "$work/wrk.out" >&2; exit 1; })
      echo "$path $enc $target $run $line" >> "$results"
    done
  done
done
size_r=$(curl -s -H "Host: statut.ville.test" "http://127.0.0.1:$port/" | wc -c)
size_n=$(curl -s "http://127.0.0.1:$nginx_port/" | wc -c)
gz_r=$(curl -s -H "Host: statut.ville.test" -H "Accept-Encoding: gzip" "http://127.0.0.1:$port/" | wc -c)
gz_n=$(curl -s -H "Accept-Encoding: gzip" "http://127.0.0.1:$nginx_port/" | wc -c)
python3 - "$results" "$RUNS" "$DURATION" "$size_r" "$size_n" "$gz_r" "$gz_n" <<'PY'
import statistics, sys
path, runs, duration, size_r, size_n, gz_r, gz_n = sys.argv[1:]
rows = {}
for line in open(path):
    p, enc, target, run, _, *kv = line.split()
    rows.setdefault((p, enc, target), []).append(dict(x.split("=") for x in kv))
med = lambda p, e, t, k: statistics.median(float(r[k]) for r in rows[(p, e, t)])
print(f"wrk -t1 -c64 -d{duration}, median of {runs} interleaved runs; page {size_r} / {size_n} bytes as is, {gz_r} / {gz_n} bytes gzip (Rempart / static copy)\n")
print("| path | Accept-Encoding | Rempart req/s | nginx req/s | Rempart/nginx | p99 ms Rempart / nginx | errors Rempart / nginx |")
print("|---|---|---|---|---|---|---|")
for p, e in (("/", "identity"), ("/", "gzip"), ("/summary.json", "gzip")):
    r, n = med(p, e, "rempart", "rps"), med(p, e, "nginx", "rps")
    errs = " / ".join(str(sum(int(x["errors"]) for x in rows[(p, e, t)])) for t in ("rempart", "nginx"))
    print(f"| `{p}` | {e} | {r:,.0f} | {n:,.0f} | {r/n:.2f}x | {med(p,e,'rempart','p99_us')/1000:.2f} / {med(p,e,'nginx','p99_us')/1000:.2f} | {errs} |")
PY
