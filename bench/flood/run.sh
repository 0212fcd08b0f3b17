#!/usr/bin/env bash
# Flood benchmark: the drill scenarios of bench/scenarios/ against the drill origin alone
# (8 workers x 5 ms = 1,600 requests/s), nginx (limit_req + limit_conn + max_conns), HAProxy
# (stick table + maxconn queue) and Rempart (defaults + the origin's concurrency ceiling).
# The system under test runs on core 0; the drill (load generator and origin) on core 1.
# Every address is loopback; the drill refuses anything else.
#
#   bench/flood/run.sh                                # every scenario, every target
#   SCENARIOS="flood-10k low-and-slow" TARGETS="rempart nginx" bench/flood/run.sh
#   RUNS=3 bench/flood/run.sh     # each cell is then the median run (by residents' success)
#   RESIDENTS=bench/scenarios/residents-shared.toml bench/flood/run.sh
#                                 # the scenarios' residents replaced by that population
#                                 # (groups behind shared addresses, bots among them)
#   REMPART_CONFIG=rempart-limits.toml ...   # another config of bench/flood/ for Rempart
#   REMPART_BIN=old/rempart DRILL_BIN=target/release/rempart ...   # an older gateway, the
#                                 # current drill
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
SCENARIOS=${SCENARIOS:-"flood-10k low-and-slow smart-10pct slowloris-rapid-reset slow-body login-post"}
TARGETS=${TARGETS:-"origin nginx haproxy rempart"}
RUNS=${RUNS:-1}
RESIDENTS=${RESIDENTS:-}
REMPART_CONFIG=${REMPART_CONFIG:-rempart.toml}
SUT_CORE=${SUT_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}

need=()
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
bin="$REMPART_BIN"
drill_bin=${DRILL_BIN:-$bin}
residents_arg=()
[ -n "$RESIDENTS" ] && residents_arg=(--residents "$root/$RESIDENTS")
ulimit -n 20000 2>/dev/null || true

work=$(mktemp -d /tmp/rempart-flood.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

origin_port=$(free_port)
# The origin stands for another machine: it shares the load generator's core here, so it runs
# at a higher priority, or a drill busy with a connection storm starves it and the gateway
# measures the load generator's CPU as the origin's latency.
origin_nice=(); nice -n -10 true 2>/dev/null && origin_nice=(nice -n -10)
"${origin_nice[@]}" taskset -c "$LOAD_CORE" "$drill_bin" drill-origin --listen "127.0.0.1:$origin_port" --workers 8 --service 5ms > "$work/origin.log" 2>&1 & pids+=($!)
wait_port "$origin_port"

sut_pid=""
start_target() { # name -> sets port and sut_pid
  port=$(free_port)
  case $1 in
    origin) port=$origin_port; sut_pid="";;
    nginx)
      sed -e "s#BENCH_DIR#$work#g" -e "s#ORIGIN_PORT#$origin_port#g" -e "s#PORT#$port#g" "$here/nginx.conf" > "$work/nginx.conf"
      taskset -c "$SUT_CORE" nginx -c "$work/nginx.conf" -p "$work" -g "daemon off;" & sut_pid=$!;;
    haproxy)
      sed -e "s#ORIGIN_PORT#$origin_port#g" -e "s#PORT#$port#g" "$here/haproxy.cfg" > "$work/haproxy.cfg"
      taskset -c "$SUT_CORE" haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 & sut_pid=$!;;
    rempart)
      # A fresh process per run starts from nothing: the watch's level and incidents of the
      # previous run (kept next to the config) would otherwise carry over.
      rm -f "$work"/*.db "$work"/*.db-*
      admin_port=$(free_port)
      sed -e "s#ADMIN_PORT#$admin_port#g" -e "s#ORIGIN_PORT#$origin_port#g" -e "s#PORT#$port#g" "$here/$REMPART_CONFIG" > "$work/rempart.toml"
      REMPART_BENCH_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n') \
        taskset -c "$SUT_CORE" "$bin" run --config "$work/rempart.toml" --no-access-log > "$work/rempart.log" 2>&1 & sut_pid=$!;;
  esac
  [ -n "$sut_pid" ] && pids+=("$sut_pid")
  wait_port "$port"
}
stop_target() { [ -n "$sut_pid" ] && { kill "$sut_pid" 2>/dev/null || true; wait "$sut_pid" 2>/dev/null || true; }; sut_pid=""; }

results="$work/results.jsonl"
: > "$results"
for run in $(seq 1 "$RUNS"); do
for scenario in $SCENARIOS; do
  for target in $TARGETS; do
    start_target "$target"
    # A fresh process per run: no state (passes, history, learned limits) carries over.
    # nginx serves from its worker process, not from the master we started.
    measured=$sut_pid
    if [ "$target" = nginx ]; then measured=$(pgrep -P "$sut_pid" | head -1); fi
    pid_arg=(); [ -n "$measured" ] && pid_arg=(--pid "$measured")
    out=$(taskset -c "$LOAD_CORE" "$drill_bin" drill --target "127.0.0.1:$port" --origin "127.0.0.1:$origin_port" \
      --scenario "$root/bench/scenarios/$scenario.toml" "${residents_arg[@]}" "${pid_arg[@]}" --json)
    echo "{\"target\":\"$target\",\"scenario_file\":\"$scenario\",\"report\":$out}" >> "$results"
    echo "$scenario / $target: $(echo "$out" | python3 -c 'import json,sys;r=json.load(sys.stdin);print("%.2f %% residents ok, p99 %d ms" % (r["legit_success_pct"], r["legit_p99_ms"]))')" >&2
    stop_target
  done
done
done

python3 - "$results" <<'PY'
import json, sys
runs = {}
for l in open(sys.argv[1]):
    r = json.loads(l)
    runs.setdefault((r["scenario_file"], r["target"]), []).append(r)
rows = []
for key, rs in runs.items():
    # The median run by residents' success (the lower middle one for an even count).
    rs.sort(key=lambda r: r["report"]["legit_success_pct"])
    med = rs[(len(rs) - 1) // 2]
    med["all_success"] = ", ".join(f'{r["report"]["legit_success_pct"]:.2f}' for r in rs)
    rows.append(med)
print(f"runs per cell: {max(len(v) for v in runs.values())}; residents ok of every run in the last column")
print()
print("| scenario | target | residents ok | p50 / p99 ms | p99 after pass | attack req/s | attack reached origin | origin busiest s / capacity | origin peak queue | gateway CPU / peak RSS | all runs |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    p = r["report"]; o = p.get("origin") or {}; g = p.get("gateway") or {}
    gw = f'{g["cpu_seconds"]/p["duration_s"]:.2f} cores / {g["peak_rss_mib"]:.0f} MiB' if g else "-"
    # With residents behind shared addresses: how much of it came from the bots among them.
    attack = o.get("attack", "-")
    if p.get("groups") and "attack_shared" in o:
        attack = f'{attack} ({o["attack_shared"]} from shared addresses)'
    print(f'| {r["scenario_file"]} | {r["target"]} | {p["legit_success_pct"]:.2f} % of {p["legit_loads"]} | {p["legit_p50_ms"]} / {p["legit_p99_ms"]} | {p["legit_p99_after_pass_ms"]} | {p["attack_rate"]:.0f} | {attack} | {o.get("peak_per_second", "-")} / {o.get("capacity_per_second", "-")} | {o.get("peak_queue", "-")} | {gw} | {r["all_success"]} |')
if any(r["report"].get("groups") for r in rows):
    print()
    print("Residents by group (the median run's):")
    print()
    print("| scenario | target | group | residents / addresses | loads ok within 1 s | answered 429 | other non-2xx / too slow / errors | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for g in r["report"].get("groups", []):
            print(f'| {r["scenario_file"]} | {r["target"]} | {g["name"]} | {g["clients"]} / {g["addresses"]} | {g["success_pct"]:.2f} % of {g["loads"]} | {g["limited"]} | {g["failed_status"]} / {g["too_slow"]} / {g["errors"]} | {g["p99_ms"]} |')
PY
