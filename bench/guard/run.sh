#!/usr/bin/env bash
# Guarded-route benchmark: the same JSON answers of residents (about 1 KiB and
# 100 KiB, NIR, IBAN, phone, e-mail in every record) through an unguarded route and a guarded
# one (records counted from the JSON array and the persons shown, NIR and IBAN masked in the
# stream, one account's budgets checked and counted per request); ratio guarded / unguarded.
# Then the guard's memory per account: RSS before and after 100,000+ distinct accounts.
# Rempart alone on core 0; wrk and the nginx origin on core 1. Loopback only.
#
#   bench/guard/run.sh                  # DURATION=10s RUNS=3
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
SUT_CORE=${SUT_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
ACCOUNTS_FOR=${ACCOUNTS_FOR:-15s}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if [ -z "${REMPART_BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked --quiet)
  REMPART_BIN="$root/target/release/rempart"
fi

work=$(mktemp -d /tmp/rempart-guard-bench.XXXXXX)
chmod 755 "$work"; mkdir -p "$work/www"
python3 "$here/gen.py" "$work/www"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

origin_port=$(free_port)
sed -e "s#BENCH_DIR#$work#g" -e "s#PORT#$origin_port#g" "$root/bench/proxy/origin.nginx.conf" > "$work/origin.conf"
taskset -c "$LOAD_CORE" nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
wait_port "$origin_port"

port=$(free_port); admin_port=$(free_port)
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/admin.token"
sed -e "s#ORIGIN_PORT#$origin_port#g" -e "s#ADMIN_PORT#$admin_port#g" -e "s#PORT#$port#g" "$here/rempart.toml" > "$work/rempart.toml"
taskset -c "$SUT_CORE" "$REMPART_BIN" run --config "$work/rempart.toml" --no-access-log > "$work/rempart.log" 2>&1 & rempart_pid=$!; pids+=($rempart_pid)
wait_port "$port"

for route in off on; do
  taskset -c "$LOAD_CORE" wrk -t1 -c64 -d2s -H "Host: bench.localhost" -H "X-User: agent" "http://127.0.0.1:$port/$route/page-1k.json" > /dev/null 2>&1
done
# The guarded answers really are masked.
masked=$(curl -s -H "Host: bench.localhost" -H "X-User: agent" "http://127.0.0.1:$port/on/page-1k.json" | grep -c 'X XX XX XX XXX XXX XX' || true)
[ "$masked" -ge 1 ] || { echo "guarded answer not masked" >&2; exit 1; }

results="$work/results.txt"; : > "$results"
for size in 1k 100k; do
  for run in $(seq 1 "$RUNS"); do
    for route in off on; do
      taskset -c "$LOAD_CORE" wrk -t1 -c64 -d"$DURATION" -H "Host: bench.localhost" -H "X-User: agent" \
        -s "$root/bench/proxy/report.lua" "http://127.0.0.1:$port/$route/page-$size.json" > "$work/wrk.out" 2>&1
      line=$(grep '^RESULT' "$work/wrk.out" || { cat "$work/wrk.out" >&2; exit 1; })
      echo "$size $route $run $line" >> "$results"
    done
  done
done

# Memory per account: distinct accounts, each taking one small page.
before=$(rss_kib "$rempart_pid")
taskset -c "$LOAD_CORE" wrk -t1 -c64 -d"$ACCOUNTS_FOR" -H "Host: bench.localhost" -s "$here/users.lua" \
  "http://127.0.0.1:$port/on/page-1k.json" > "$work/accounts.out" 2>&1
sleep 1
after=$(rss_kib "$rempart_pid")
tracked=$(curl -s -H "Authorization: Bearer $(cat "$work/admin.token")" "http://127.0.0.1:$admin_port/admin/guard/accounts?limit=0" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["tenants"][0]["tracked"])')

python3 - "$results" "$before" "$after" "$tracked" "$DURATION" "$RUNS" <<'PY'
import statistics, sys
path, before, after, tracked, duration, runs = sys.argv[1:]
rows = {}
for line in open(path):
    size, route, run, _, *kv = line.split()
    rows.setdefault((size, route), []).append(dict(x.split("=") for x in kv))
med = lambda size, route, key: statistics.median(float(r[key]) for r in rows[(size, route)])
print(f"requests/s, wrk -t1 -c64 -d{duration}, median of {runs} interleaved runs; Rempart alone on core 0, wrk + nginx origin on core 1\n")
print("| answer | unguarded | guarded | guarded / unguarded | p99 ms unguarded / guarded | errors |")
print("|---|---|---|---|---|---|")
for size, label in (("1k", "JSON, 5 residents (0.9 KiB)"), ("100k", "JSON, 550 residents (100 KiB)")):
    off, on = med(size, "off", "rps"), med(size, "on", "rps")
    p99 = f"{med(size, 'off', 'p99_us') / 1000:.2f} / {med(size, 'on', 'p99_us') / 1000:.2f}"
    errs = sum(int(r["errors"]) for route in ("off", "on") for r in rows[(size, route)])
    print(f"| {label} | {off:,.0f} | {on:,.0f} | {on / off:.2f}x | {p99} | {errs} |")
b, a, t = int(before), int(after), int(tracked)
print(f"\nAccounts tracked: {t:,}; RSS {b / 1024:.1f} MiB before, {a / 1024:.1f} MiB after: "
      f"{(a - b) / 1024 / max(t, 1) * 100_000:.0f} MiB per 100,000 accounts")
PY
