#!/usr/bin/env bash
# Proxy benchmark: origin direct vs nginx and HAProxy (keep-alive reverse proxies) vs Rempart, for 1 KiB and
# 100 KiB answers and 1 KiB POST bodies (`post`: nginx and Rempart read the body whole
# before forwarding, nginx's default; HAProxy streams it) at 64 and 256 connections, median
# of RUNS runs of DURATION each. The TLS rows: 1 KiB over HTTPS on kept-alive connections
# (`tls`), and a new TLS connection (ECDSA P-256, TLS 1.3) for every request (`tls-new`):
# wrk offers each new connection the session of the previous one, so these handshakes are
# resumed where the server resumes (session tickets), full otherwise. The origin behind
# stays plain HTTP. `close`: a new cleartext connection for every 1 KiB GET.
# `tls-full` (not in the default SIZES): a full TLS 1.3 handshake for every 1 KiB GET, from
# bench/proxy/handshakes.py (a client that never resumes), 4 processes.
# The system under test runs alone on core 0; wrk and the backend origin run on core 1.
# Each row also gives the server's CPU per request (process and workers, from /proc): where
# wrk's core is what bounds the rate (a handshake per request), that still compares them.
# Only loopback addresses are used.
#
#   bench/proxy/run.sh                 # defaults: DURATION=10s RUNS=3
#   DURATION=5s RUNS=3 bench/proxy/run.sh
#   SIZES=post bench/proxy/run.sh      # only the 1 KiB POST rows
#   SIZES="tls tls-new" bench/proxy/run.sh
#   SIZES=held bench/proxy/run.sh      # memory per held connection: HELD (3,000) connections
#                                      # idle after one request, then dribbling a head
#                                      # (slowloris), RSS before and while held
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/tls.sh"
root=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
SIZES=${SIZES:-1k 100k post close tls tls-new}
HELD=${HELD:-3000}
SUT_CORE=${SUT_CORE:-0}
# Thousands of held connections need as many descriptors (the servers inherit this limit).
ulimit -n 20000 2>/dev/null || true
wrk_sizes=""; for s in $SIZES; do [ "$s" = held ] || wrk_sizes+="$s "; done
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
make_cert "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

declare -A sut_pid # target -> the pid of the system under test
start_origin() { # port core [tls port]
  sed -e "s#BENCH_DIR#$work#g" -e "s#PORT#$1#g" "$here/origin.nginx.conf" > "$work/origin-$1.conf"
  [ -z "${3:-}" ] || nginx_tls "$work/origin-$1.conf" "$1" "$3" "$work"
  taskset -c "$2" nginx -c "$work/origin-$1.conf" -p "$work" & pids+=($!)
  wait_port "$1"
}

backend_port=$(free_port); start_origin "$backend_port" "$LOAD_CORE"
direct_port=$(free_port); direct_tls=$(free_port); start_origin "$direct_port" "$SUT_CORE" "$direct_tls"; sut_pid[direct]=${pids[-1]}

nginx_port=$(free_port)
sed -e "s#BENCH_DIR#$work#g" -e "s#ORIGIN_PORT#$backend_port#g" -e "s#PORT#$nginx_port#g" "$here/proxy.nginx.conf" > "$work/nginx-proxy.conf"
nginx_tls_port=$(free_port); nginx_tls "$work/nginx-proxy.conf" "$nginx_port" "$nginx_tls_port" "$work"
taskset -c "$SUT_CORE" nginx -c "$work/nginx-proxy.conf" -p "$work" & pids+=($!); sut_pid[nginx]=$!
wait_port "$nginx_port"

haproxy_port=$(free_port)
sed -e "s#ORIGIN_PORT#$backend_port#g" -e "s#PORT#$haproxy_port#g" "$here/haproxy.cfg" > "$work/haproxy.cfg"
haproxy_tls_port=$(free_port); haproxy_tls "$work/haproxy.cfg" "$haproxy_port" "$haproxy_tls_port" "$work"
taskset -c "$SUT_CORE" haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 & pids+=($!); sut_pid[haproxy]=$!
wait_port "$haproxy_port"

rempart_port=$(free_port)
sed -e "s#ORIGIN_PORT#$backend_port#g" -e "s#PORT#$rempart_port#g" "$here/rempart.toml" > "$work/rempart.toml"
rempart_tls_port=$(free_port); rempart_tls "$work/rempart.toml" "$rempart_tls_port" "$work" "$REMPART_BIN"
taskset -c "$SUT_CORE" "$REMPART_BIN" run --config "$work/rempart.toml" --no-access-log > "$work/rempart.log" 2>&1 & rempart_pid=$!; pids+=($rempart_pid); sut_pid[rempart]=$rempart_pid
wait_port "$rempart_port"
for p in "$direct_tls" "$nginx_tls_port" "$haproxy_tls_port" "$rempart_tls_port"; do wait_port "$p"; done
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# CPU time (clock ticks) of a process and its children (nginx's workers): where the load
# generator is what bounds a row (a handshake per request), the server's CPU per request says
# what the rate cannot.
cpu_ticks() { local t=0 p; for p in "$1" $(pgrep -P "$1" || true); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
idle_rss=$(rss_kib "$rempart_pid")

# Warm every target up (connections, allocator, caches) before measuring.
for port in $direct_port $nginx_port $haproxy_port $rempart_port; do
  taskset -c "$LOAD_CORE" wrk -t1 -c256 -d2s -H "Host: bench.localhost" "http://127.0.0.1:$port/1k" > /dev/null 2>&1
done

results="$work/results.txt"
: > "$results"
peak_rss=0
for size in $wrk_sizes; do
  case $size in post) script="$here/post.lua"; path=post;; tls*|close) script="$here/report.lua"; path=1k;; *) script="$here/report.lua"; path=$size;; esac
  # close, tls-new: the server closes after each answer, so wrk opens a new connection per
  # request.
  close=(); case $size in close|tls-new) close=(-H "Connection: close");; esac
  # tls-full: a client that never resumes (bench/proxy/handshakes.py, Python's ssl), in 4
  # processes on wrk's core, instead of wrk (which always offers the last session).
  counts="64 256"; [ "$size" = tls-full ] && counts=4
  for conns in $counts; do
    # Runs interleave the three targets so that drift on a shared VM hits them alike.
    for run in $(seq 1 "$RUNS"); do
      for target in direct nginx haproxy rempart; do
        case $target in direct) port=$direct_port; tls=$direct_tls;; nginx) port=$nginx_port; tls=$nginx_tls_port;; haproxy) port=$haproxy_port; tls=$haproxy_tls_port;; rempart) port=$rempart_port; tls=$rempart_tls_port;; esac
        url="http://127.0.0.1:$port/$path"; case $size in tls*) url="https://127.0.0.1:$tls/$path";; esac
        if [ "$size" = tls-full ]; then
          taskset -c "$LOAD_CORE" python3 "$here/handshakes.py" "$tls" "${DURATION%s}" "$conns" > "$work/wrk.out" 2>&1 &
        else
          taskset -c "$LOAD_CORE" wrk -t1 -c"$conns" -d"$DURATION" -H "Host: bench.localhost" "${close[@]}" -s "$script" \
            "$url" > "$work/wrk.out" 2>&1 &
        fi
        wrk_pid=$!
        ticks_before=$(cpu_ticks "${sut_pid[$target]}")
        if [ "$target" = rempart ] && [ "$conns" = 256 ]; then
          sleep 2; r=$(rss_kib "$rempart_pid"); [ "$r" -gt "$peak_rss" ] && peak_rss=$r
        fi
        wait "$wrk_pid"
        ticks=$(( $(cpu_ticks "${sut_pid[$target]}") - ticks_before ))
        line=$(grep '^RESULT' "$work/wrk.out" || { cat "$work/wrk.out" >&2; exit 1; })
        echo "$size $conns $target $run $line ticks=$ticks hz=$(getconf CLK_TCK)" >> "$results"
      done
    done
  done
done

held_results="$work/held.txt"
: > "$held_results"
if [[ " $SIZES " == *" held "* ]]; then
  sum_rss() { local t=0 p; for p in "$@"; do t=$((t + $(rss_kib "$p"))); done; echo "$t"; }
  # Each measure on a fresh process of the target (same configuration, a port of its own),
  # warmed by a short load: memory freed by an earlier measure would hide this one's.
  # mode h2: nginx and HAProxy take HTTP/2 by prior knowledge on that listener (Rempart
  # tells it from the preface on any listener).
  fresh() { # target mode -> sets held_port and held_procs
    held_port=$(free_port)
    local nginx_h2="" haproxy_h2=""
    if [ "$2" = h2 ]; then nginx_h2=" http2"; haproxy_h2=" proto h2"; fi
    case $1 in
      nginx)
        sed -e "s#BENCH_DIR#$work/held#g" -e "s#ORIGIN_PORT#$backend_port#g" -e "s#PORT#$held_port#g" -e "s#reuseport;#reuseport$nginx_h2;#" "$here/proxy.nginx.conf" > "$work/held/nginx.conf"
        taskset -c "$SUT_CORE" nginx -c "$work/held/nginx.conf" -p "$work/held" & held_pid=$!;;
      haproxy)
        sed -e "s#ORIGIN_PORT#$backend_port#g" -e "s#PORT#$held_port#g" -e "s#^\(    bind .*\)#\1$haproxy_h2#" "$here/haproxy.cfg" > "$work/held/haproxy.cfg"
        taskset -c "$SUT_CORE" haproxy -db -f "$work/held/haproxy.cfg" > "$work/held/haproxy.log" 2>&1 & held_pid=$!;;
      rempart)
        sed -e "s#ORIGIN_PORT#$backend_port#g" -e "s#PORT#$held_port#g" "$here/rempart.toml" > "$work/held/rempart.toml"
        taskset -c "$SUT_CORE" "$REMPART_BIN" run --config "$work/held/rempart.toml" --no-access-log > "$work/held/rempart.log" 2>&1 & held_pid=$!;;
    esac
    wait_port "$held_port"
    [ "$2" = h2 ] || taskset -c "$LOAD_CORE" wrk -t1 -c256 -d1s -H "Host: bench.localhost" "http://127.0.0.1:$held_port/1k" > /dev/null 2>&1
    held_procs=("$held_pid" $(pgrep -P "$held_pid" || true))
  }
  mkdir -p "$work/held"
  for mode in idle slowloris h2; do
    for run in $(seq 1 "$RUNS"); do
      for target in nginx haproxy rempart; do
        fresh "$target" "$mode"
        before=$(sum_rss "${held_procs[@]}")
        taskset -c "$LOAD_CORE" python3 "$here/hold.py" "$mode" "$held_port" "$HELD" < <(sleep 600) > "$work/hold.out" 2>&1 &
        holder=$!
        for _ in $(seq 1 600); do grep -q '^held' "$work/hold.out" && break; sleep 0.1; done
        grep -q '^held' "$work/hold.out" || { cat "$work/hold.out" >&2; exit 1; }
        sleep 1
        after=$(sum_rss "${held_procs[@]}")
        echo "$mode $target $run $before $after" >> "$held_results"
        kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
        kill "$held_pid" 2>/dev/null || true; wait "$held_pid" 2>/dev/null || true
      done
    done
  done
  python3 - "$held_results" "$HELD" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, target, run, before, after = line.split()
    rows.setdefault((mode, target), []).append((int(after) - int(before)) / int(sys.argv[2]))
print(f"memory per held connection (KiB): RSS while {sys.argv[2]} connections are held minus before, median of the runs\n")
print("| connections held | nginx | HAProxy | Rempart |")
print("|---|---|---|---|")
for mode, label in (("idle", "idle keep-alive, after one 1 KiB GET"), ("slowloris", "slowloris: a head begun, never ended"), ("h2", "idle HTTP/2 (prior knowledge), after one 1 KiB GET")):
    cells = [f"{statistics.median(rows[(mode, t)]):.1f}" for t in ("nginx", "haproxy", "rempart")]
    print(f"| {label} | " + " | ".join(cells) + " |")
print()
PY
fi
[ -n "${wrk_sizes// /}" ] || exit 0

python3 - "$results" "$idle_rss" "$peak_rss" "$DURATION" "$RUNS" "$wrk_sizes" <<'PY'
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
print("| body | conns | direct | nginx | HAProxy | Rempart | Rempart/nginx | per-run Rempart/nginx | Rempart/HAProxy | Rempart/direct | p50 ms nginx / HAProxy / Rempart | p99 ms nginx / HAProxy / Rempart | CPU us/request nginx / HAProxy / Rempart | errors direct / nginx / HAProxy / Rempart |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
targets = ("direct", "nginx", "haproxy", "rempart")
for size in sizes.split():
    for conns in sorted({c for (s, c, _) in rows if s == size}):
        d, n, h, r = (med("rps", size, conns, t) for t in targets)
        p50 = " / ".join(f"{med('p50_us', size, conns, t) / 1000:.2f}" for t in targets[1:])
        p99 = " / ".join(f"{med('p99_us', size, conns, t) / 1000:.2f}" for t in targets[1:])
        # The server's CPU per request (its process and workers), median of the runs.
        def cpu_us(t):
            return statistics.median(int(x["ticks"]) / int(x["hz"]) * 1e6 / max(int(x["requests"]), 1)
                                     for x in rows[(size, conns, t)])
        cpu = " / ".join(f"{cpu_us(t):.0f}" for t in targets[1:])
        # Errors of all runs, per target (direct / nginx / HAProxy / Rempart).
        errs = " / ".join(str(sum(int(x["errors"]) for x in rows[(size, conns, t)])) for t in targets)
        label = {"1k": "1 KiB", "100k": "100 KiB", "post": "POST 1 KiB", "tls": "TLS 1 KiB", "tls-new": "TLS 1 KiB, new connection each (resumed)", "close": "1 KiB, new connection each", "tls-full": "TLS 1.3, full handshake each (client processes; no latency figures)"}[size]
        # Ratios of the runs made side by side: how far this VM moved the comparison.
        per_run = sorted(float(a["rps"]) / float(b["rps"])
                         for a, b in zip(rows[(size, conns, "rempart")], rows[(size, conns, "nginx")]))
        spread = f"{per_run[0]:.2f}-{per_run[-1]:.2f}"
        print(f"| {label} | {conns} | {d:,.0f} | {n:,.0f} | {h:,.0f} | {r:,.0f} | {r/n:.2f}x | {spread} | {r/h:.2f}x | {r/d:.2f}x | {p50} | {p99} | {cpu} | {errs} |")
print(f"\nRempart RSS: idle {int(idle)/1024:.1f} MiB, under 256-connection load {int(peak)/1024:.1f} MiB")
PY
