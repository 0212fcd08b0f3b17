#!/usr/bin/env bash
# Proxy benchmark: origin direct vs nginx and HAProxy (keep-alive reverse proxies) vs Rempart, for 1 KiB and
# 100 KiB answers and 1 KiB POST bodies (`post`: nginx and Rempart read the body whole
# before forwarding, nginx's default; HAProxy streams it) at 64 and 256 connections, median
# of RUNS runs of DURATION each.
# The system under test runs alone on core 0; wrk and the backend origin run on core 1.
# Only loopback addresses are used.
#
#   bench/proxy/run.sh                 # defaults: DURATION=10s RUNS=3
#   DURATION=5s RUNS=3 bench/proxy/run.sh
#   SIZES=post bench/proxy/run.sh      # only the 1 KiB POST rows
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
SIZES=${SIZES:-1k 100k post}
SUT_CORE=${SUT_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
# REMPART_BIN: another build of Rempart to measure (say, the commit before a change), same setup.
if [ -z "${REMPART_BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked --quiet)
  REMPART_BIN="$root/target/release/rempart"
fi

work=$(mktemp -d /tmp/rempart-bench.XXXXXX)
chmod 755 "$work"; mkdir -p "$work/www"
head -c 1024 /dev/zero | tr '\0' 'a' > "$work/www/1k"
head -c 102400 /dev/zero | tr '\0' 'b' > "$work/www/100k"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

start_origin() { # port core
  sed -e "s#BENCH_DIR#$work#g" -e "s#PORT#$1#g" "$here/origin.nginx.conf" > "$work/origin-$1.conf"
  taskset -c "$2" nginx -c "$work/origin-$1.conf" -p "$work" & pids+=($!)
  wait_port "$1"
}

backend_port=$(free_port); start_origin "$backend_port" "$LOAD_CORE"
direct_port=$(free_port); start_origin "$direct_port" "$SUT_CORE"

nginx_port=$(free_port)
sed -e "s#BENCH_DIR#$work#g" -e "s#ORIGIN_PORT#$backend_port#g" -e "s#PORT#$nginx_port#g" "$here/proxy.nginx.conf" > "$work/nginx-proxy.conf"
taskset -c "$SUT_CORE" nginx -c "$work/nginx-proxy.conf" -p "$work" & pids+=($!)
wait_port "$nginx_port"

haproxy_port=$(free_port)
sed -e "s#ORIGIN_PORT#$backend_port#g" -e "s#PORT#$haproxy_port#g" "$here/haproxy.cfg" > "$work/haproxy.cfg"
taskset -c "$SUT_CORE" haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 & pids+=($!)
wait_port "$haproxy_port"

rempart_port=$(free_port)
sed -e "s#ORIGIN_PORT#$backend_port#g" -e "s#PORT#$rempart_port#g" "$here/rempart.toml" > "$work/rempart.toml"
taskset -c "$SUT_CORE" "$REMPART_BIN" run --config "$work/rempart.toml" --no-access-log > "$work/rempart.log" 2>&1 & rempart_pid=$!; pids+=($rempart_pid)
wait_port "$rempart_port"
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
idle_rss=$(rss_kib "$rempart_pid")

# Warm every target up (connections, allocator, caches) before measuring.
for port in $direct_port $nginx_port $haproxy_port $rempart_port; do
  taskset -c "$LOAD_CORE" wrk -t1 -c256 -d2s -H "Host: bench.localhost" "http://127.0.0.1:$port/1k" > /dev/null 2>&1
done

results="$work/results.txt"
: > "$results"
peak_rss=0
for size in $SIZES; do
  case $size in post) script="$here/post.lua"; path=post;; *) script="$here/report.lua"; path=$size;; esac
  for conns in 64 256; do
    # Runs interleave the three targets so that drift on a shared VM hits them alike.
    for run in $(seq 1 "$RUNS"); do
      for target in direct nginx haproxy rempart; do
        case $target in direct) port=$direct_port;; nginx) port=$nginx_port;; haproxy) port=$haproxy_port;; rempart) port=$rempart_port;; esac
        taskset -c "$LOAD_CORE" wrk -t1 -c"$conns" -d"$DURATION" -H "Host: bench.localhost" -s "$script" \
          "http://127.0.0.1:$port/$path" > "$work/wrk.out" 2>&1 &
        wrk_pid=$!
        if [ "$target" = rempart ] && [ "$conns" = 256 ]; then
          sleep 2; r=$(rss_kib "$rempart_pid"); [ "$r" -gt "$peak_rss" ] && peak_rss=$r
        fi
        wait "$wrk_pid"
        line=$(grep '^RESULT' "$work/wrk.out" || { cat "$work/wrk.out" >&2; exit 1; })
        echo "$size $conns $target $run $line" >> "$results"
      done
    done
  done
done

python3 - "$results" "$idle_rss" "$peak_rss" "$DURATION" "$RUNS" "$SIZES" <<'PY'
import re, statistics, sys
path, idle, peak, duration, runs, sizes = sys.argv[1:]
rows = {}
for line in open(path):
    size, conns, target, run, _, *kv = line.split()
    d = dict(x.split("=") for x in kv)
    rows.setdefault((size, int(conns), target), []).append(d)
def med(key, size, conns, target):
    return statistics.median(float(r[key]) for r in rows[(size, conns, target)])
print(f"requests/s, wrk -t1 -d{duration}, median of {runs} interleaved runs; system under test alone on core 0, wrk + backend origin on core 1\n")
print("| body | conns | direct | nginx | HAProxy | Rempart | Rempart/nginx | per-run Rempart/nginx | Rempart/HAProxy | Rempart/direct | p50 ms nginx / HAProxy / Rempart | p99 ms nginx / HAProxy / Rempart | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
targets = ("direct", "nginx", "haproxy", "rempart")
for size in sizes.split():
    for conns in [64, 256]:
        d, n, h, r = (med("rps", size, conns, t) for t in targets)
        p50 = " / ".join(f"{med('p50_us', size, conns, t) / 1000:.2f}" for t in targets[1:])
        p99 = " / ".join(f"{med('p99_us', size, conns, t) / 1000:.2f}" for t in targets[1:])
        errs = sum(int(x["errors"]) for t in targets for x in rows[(size, conns, t)])
        label = {"1k": "1 KiB", "100k": "100 KiB", "post": "POST 1 KiB"}[size]
        # Ratios of the runs made side by side: how far this VM moved the comparison.
        per_run = sorted(float(a["rps"]) / float(b["rps"])
                         for a, b in zip(rows[(size, conns, "rempart")], rows[(size, conns, "nginx")]))
        spread = f"{per_run[0]:.2f}-{per_run[-1]:.2f}"
        print(f"| {label} | {conns} | {d:,.0f} | {n:,.0f} | {h:,.0f} | {r:,.0f} | {r/n:.2f}x | {spread} | {r/h:.2f}x | {r/d:.2f}x | {p50} | {p99} | {errs} |")
print(f"\nRempart RSS: idle {int(idle)/1024:.1f} MiB, under 256-connection load {int(peak)/1024:.1f} MiB")
PY
