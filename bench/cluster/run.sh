#!/usr/bin/env bash
# Cluster mode's costs, on loopback with a real redis-server:
#  1. the request path: one Rempart node with `[cluster]` against the same node without it,
#     proxied 1 KiB GET at 64 and 256 connections (wrk), RUNS interleaved runs of DURATION;
#  2. ban propagation: BANS bans made through node a's admin API, each timed until node b's
#     admin API lists it (p50, p99, max);
#  3. Redis traffic: commands Redis processed per second per node, idle and while wrk
#     floods node a (INFO's total_commands_processed over the period);
#  4. counter convergence: PROBES bursts of 150 requests from one address to node c (limit
#     100 a second per address), each timed from the burst's end until node d refuses
#     that address (its own probes stay far below the limit): how long the others' counts
#     take to count on another node, against the report period (100 ms).
# The gateways run on core 0, wrk, the origin and Redis on core 1. Loopback only.
#
#   bench/cluster/run.sh                     # defaults: DURATION=5s RUNS=5 BANS=200
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-5s}
RUNS=${RUNS:-5}
BANS=${BANS:-200}
PROBES=${PROBES:-30}
SECTIONS=${SECTIONS:-"1 2 3 4 5"}   # SECTIONS="4 5" runs only those
want() { [[ " $SECTIONS " == *" $1 "* ]]; }

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if [ -z "${REMPART_BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked --quiet)
  REMPART_BIN="$root/target/release/rempart"
fi

work=$(mktemp -d /tmp/rempart-cluster.XXXXXX)
chmod 755 "$work"; mkdir -p "$work/www"
head -c 1024 /dev/zero | tr '\0' 'a' > "$work/www/1k"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

origin=$(free_port)
sed -e "s#BENCH_DIR#$work#g" -e "s#PORT#$origin#g" "$root/bench/proxy/origin.nginx.conf" > "$work/origin.conf"
taskset -c 1 nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
wait_port "$origin"
redis=$(free_port)
taskset -c 1 redis-server --port "$redis" --bind 127.0.0.1 --save "" --appendonly no > "$work/redis.log" 2>&1 & pids+=($!)
wait_port "$redis"
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$token" > "$work/admin.token"; chmod 600 "$work/admin.token"

# gateway NAME CLUSTER(0|1) [EXTRA]: starts a node (EXTRA appended to its tenant); prints
# "port admin_port".
gateway() {
  local port admin
  port=$(free_port); admin=$(free_port)
  mkdir -p "$work/$1"
  sed -e "s#ORIGIN_PORT#$origin#g" -e "s#PORT#$port#g" "$root/bench/proxy/rempart.toml" \
    | sed -e "s#^address = \"127.0.0.1:0\"#address = \"127.0.0.1:$admin\"\ntoken_file = \"$work/admin.token\"#" > "$work/$1/rempart.toml"
  [ -n "${3:-}" ] && printf '\n%s\n' "$3" >> "$work/$1/rempart.toml"
  if [ "$2" = 1 ]; then
    printf '\n[cluster]\nredis = "redis://127.0.0.1:%s/0"\nnode = "%s"\n' "$redis" "$1" >> "$work/$1/rempart.toml"
  fi
  taskset -c 0 "$REMPART_BIN" run --config "$work/$1/rempart.toml" --no-access-log > "$work/$1/log" 2>&1 & pids+=($!)
  wait_port "$port"; wait_port "$admin"
  echo "$port $admin"
}
if want 1 || want 2 || want 3; then
  read -r plain_port _ < <(gateway plain 0)
  read -r a_port a_admin < <(gateway a 1)
  read -r _ b_admin < <(gateway b 1)
  for p in $plain_port $a_port; do
    taskset -c 1 wrk -t1 -c256 -d2s -H "Host: bench.localhost" "http://127.0.0.1:$p/1k" > /dev/null 2>&1
  done
fi

if want 1; then
echo "## 1. Request path: cluster mode on (node a) vs off, 1 KiB GET, median of $RUNS interleaved runs of $DURATION"
echo
echo "| conns | off req/s | on req/s | on/off | p99 ms off / on |"
echo "|---|---|---|---|---|"
for c in 64 256; do
  : > "$work/off"; : > "$work/on"
  for _ in $(seq 1 "$RUNS"); do
    for t in off on; do
      p=$plain_port; [ $t = on ] && p=$a_port
      taskset -c 1 wrk -t1 -c"$c" -d"$DURATION" -H "Host: bench.localhost" -s "$root/bench/proxy/report.lua" \
        "http://127.0.0.1:$p/1k" 2>&1 | grep '^RESULT' >> "$work/$t"
    done
  done
  python3 - "$work/off" "$work/on" "$c" <<'PY'
import statistics, sys
def load(path):
    rows = [dict(kv.split("=") for kv in line.split()[1:]) for line in open(path)]
    return statistics.median(float(r["rps"]) for r in rows), statistics.median(float(r["p99_us"]) for r in rows) / 1000
off, on, c = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
print(f"| {c} | {off[0]:,.0f} | {on[0]:,.0f} | {on[0] / off[0]:.3f} | {off[1]:.2f} / {on[1]:.2f} |")
PY
done
fi

if want 2; then
echo
echo "## 2. Ban propagation: $BANS bans made on a, each timed until b lists it"
echo
python3 - "$a_admin" "$b_admin" "$token" "$BANS" <<'PY'
import http.client, json, statistics, sys, time
a_port, b_port, token, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
auth = {"authorization": f"Bearer {token}", "content-type": "application/json"}
a = http.client.HTTPConnection("127.0.0.1", a_port)
b = http.client.HTTPConnection("127.0.0.1", b_port)
def call(conn, method, path, body=None):
    conn.request(method, path, body=body, headers=auth)
    r = conn.getresponse()
    return r.status, r.read()
took = []
for i in range(n):
    target = f"198.18.{i // 250}.{i % 250 + 1}/32"
    start = time.perf_counter()
    status, _ = call(a, "POST", "/admin/bans", json.dumps({"target": target, "reason": "bench", "duration": "5m"}))
    assert status == 200, status
    while True:
        status, body = call(b, "GET", "/admin/bans")
        if target.encode() in body:
            break
        if time.perf_counter() - start > 5:
            raise SystemExit(f"{target} never reached b")
    took.append((time.perf_counter() - start) * 1000)
    call(a, "DELETE", f"/admin/bans?target={target}")
took.sort()
q = lambda p: took[min(len(took) - 1, int(p * len(took)))]
print(f"ban made on a -> listed by b: p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {took[-1]:.2f} ms ({n} bans; each includes one admin call on a and the polling of b's list)")
PY
fi

if want 3; then
echo
echo "## 3. Redis traffic per node"
echo
commands() { redis-cli -p "$redis" info stats | awk -F: '/^total_commands_processed/ {print $2+0}'; }
c0=$(commands); sleep 10; c1=$(commands)
taskset -c 1 wrk -t1 -c256 -d10s -H "Host: bench.localhost" "http://127.0.0.1:$a_port/1k" > "$work/flood.out" 2>&1
c2=$(commands)
flood=$(awk '/Requests\/sec/ {print $2}' "$work/flood.out")
python3 -c "
idle = ($c1 - $c0) / 10 / 2
busy = ($c2 - $c1) / 10 / 2
print(f'idle: {idle:.1f} Redis commands/s per node; while node a served {float(\"$flood\"):,.0f} requests/s: {busy:.1f} per node (2 nodes; 0 per request)')
"
fi

if want 4; then
echo
echo "## 4. Counter convergence: a burst on c, until d refuses the address"
echo
read -r c_port _ < <(gateway c 1 $'[tenants.shield]\naddress_rate = 100')
read -r d_port _ < <(gateway d 1 $'[tenants.shield]\naddress_rate = 100')
python3 - "$c_port" "$d_port" "$PROBES" <<'PY'
import socket, statistics, sys, time
c_port, d_port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
REQ = b"GET /1k HTTP/1.1\r\nHost: bench.localhost\r\n\r\n"
def status(port, source):
    s = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
    s.sendall(REQ.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n"))
    line = s.recv(64).split(b"\r\n")[0]
    s.close()
    return int(line.split()[1])
took = []
for i in range(n):
    source = f"127.0.{100 + i // 200}.{i % 200 + 2}"
    # Burst: 150 requests on one keep-alive connection (the first 100 served).
    s = socket.create_connection(("127.0.0.1", c_port), source_address=(source, 0))
    f = s.makefile("rb")
    for _ in range(150):
        s.sendall(REQ)
        line = f.readline()
        length = 0
        while True:
            h = f.readline()
            if h in (b"\r\n", b""):
                break
            if h.lower().startswith(b"content-length:"):
                length = int(h.split(b":")[1])
        f.read(length)
    s.close()
    end = time.perf_counter()
    while True:
        if status(d_port, source) == 429:
            break
        if time.perf_counter() - end > 2:
            raise SystemExit(f"d never counted c's burst from {source}")
        time.sleep(0.002)
    took.append((time.perf_counter() - end) * 1000)
    time.sleep(1.237)  # the next burst in a window of its own, at another phase of the reports
took.sort()
q = lambda p: took[min(len(took) - 1, int(p * len(took)))]
print(f"c's burst counted by d after: p50 {q(0.5):.0f} ms, p99 {q(0.99):.0f} ms, max {took[-1]:.0f} ms ({n} bursts; report period 100 ms, so 2 periods = 200 ms)")
PY
fi

if want 5; then
echo
echo "## 5. The flood drill against one node and against two (the attack split between them)"
echo
# The drill origin (8 workers x 5 ms = 1,600 requests/s) stands for the town's server: one
# node's pool may hold 8 requests at once, each of two nodes 4 (max_concurrency is per node).
DRILL_RUNS=${DRILL_RUNS:-3}
SCENARIO=${SCENARIO:-flood-10k}
ulimit -n 20000 2>/dev/null || true
drill_origin=$(free_port)
taskset -c 1 "$REMPART_BIN" drill-origin --listen "127.0.0.1:$drill_origin" --workers 8 --service 5ms > "$work/drill-origin.log" 2>&1 & pids+=($!)
wait_port "$drill_origin"
# flood_node NAME CONCURRENCY: a node of the flood benchmark's configuration in the cluster;
# prints "port pid".
flood_node() {
  local port admin
  port=$(free_port); admin=$(free_port)
  mkdir -p "$work/flood-$1"
  sed -e "s#ADMIN_PORT#$admin#g" -e "s#ORIGIN_PORT#$drill_origin#g" -e "s#PORT#$port#g" \
      -e "s#max_concurrency = 8#max_concurrency = $2#" "$root/bench/flood/rempart.toml" > "$work/flood-$1/rempart.toml"
  printf '\n[cluster]\nredis = "redis://127.0.0.1:%s/0"\nnode = "%s"\nkey_prefix = "flood-%s"\n' "$redis" "$1" "$3" >> "$work/flood-$1/rempart.toml"
  (cd "$work/flood-$1" && REMPART_BENCH_TOKEN=$token exec taskset -c 0 "$REMPART_BIN" run --config rempart.toml --no-access-log > log 2>&1) & 
  local pid=$!
  pids+=("$pid")
  wait_port "$port"
  echo "$port $pid"
}
: > "$work/drill.jsonl"
for run in $(seq 1 "$DRILL_RUNS"); do
  for setup in one two; do
    if [ $setup = one ]; then
      read -r p1 pid1 < <(flood_node "one-$run" 8 "one-$run")
      targets=(--target "127.0.0.1:$p1"); pidargs=(--pid "$pid1"); nodes=("$pid1")
    else
      read -r p1 pid1 < <(flood_node "a-$run" 4 "two-$run")
      read -r p2 pid2 < <(flood_node "b-$run" 4 "two-$run")
      targets=(--target "127.0.0.1:$p1" --target "127.0.0.1:$p2"); pidargs=(--pid "$pid1" --pid "$pid2"); nodes=("$pid1" "$pid2")
    fi
    stats() { redis-cli -p "$redis" info stats | awk -F: '/^total_commands_processed|^total_net_input_bytes/ {printf "%s ", $2+0} END {print ""}'; }
    read -r cmd0 in0 < <(stats)
    out=$(taskset -c 1 "$REMPART_BIN" drill "${targets[@]}" --origin "127.0.0.1:$drill_origin" \
      --scenario "$root/bench/scenarios/$SCENARIO.toml" "${pidargs[@]}" --json)
    read -r cmd1 in1 < <(stats)
    echo "{\"setup\":\"$setup\",\"nodes\":${#nodes[@]},\"redis_commands\":$((cmd1 - cmd0)),\"redis_in_bytes\":$((in1 - in0)),\"report\":$out}" >> "$work/drill.jsonl"
    for p in "${nodes[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    wait "${nodes[@]}" 2>/dev/null || true
  done
done
python3 - "$work/drill.jsonl" "$SCENARIO" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    r["report"]["redis"] = (r["redis_commands"], r["redis_in_bytes"], r["nodes"])
    runs.setdefault(r["setup"], []).append(r["report"])
print(f"{sys.argv[2]}, median of {len(runs['one'])} runs by residents' success (every run in the last column)")
print()
print("| nodes | residents ok | p50 / p99 ms | attack req/s | attack reached origin | origin busiest s / capacity | origin peak queue | gateways' CPU | Redis per node: commands/s, KiB/s in | all runs |")
print("|---|---|---|---|---|---|---|---|---|---|")
for setup, label in (("one", "1 (8 at once to the origin)"), ("two", "2 (4 at once each)")):
    rs = sorted(runs[setup], key=lambda p: p["legit_success_pct"])
    p = rs[(len(rs) - 1) // 2]
    o = p.get("origin") or {}
    g = p.get("gateway") or {}
    cpu = f'{g["cpu_seconds"] / p["duration_s"]:.2f} cores' if g else "-"
    every = ", ".join(f'{r["legit_success_pct"]:.2f}' for r in rs)
    commands, bytes_in, nodes = p["redis"]
    redis = f'{commands / p["duration_s"] / nodes:.1f}, {bytes_in / p["duration_s"] / nodes / 1024:.1f}'
    print(f'| {label} | {p["legit_success_pct"]:.2f} % of {p["legit_loads"]} | {p["legit_p50_ms"]} / {p["legit_p99_ms"]} | {p["attack_rate"]:.0f} | {o.get("attack", "-")} | {o.get("peak_per_second", "-")} / {o.get("capacity_per_second", "-")} | {o.get("peak_queue", "-")} | {cpu} | {redis} | {every} |')
PY
fi
