#!/usr/bin/env bash
# Upgrades under full load: wrk keeps 64 connections busy on a 1 KiB page through Rempart
# while the binary is replaced ROUNDS times, first with `rempart upgrade` (the sockets handed
# to the new process), then, for comparison, the way a plain restart does it (SIGTERM, then
# the new process at once), and nginx's own graceful reload under the same load. Reports
# wrk's requests, errors (connect, read, write, timeout) and non-2xx answers per row.
# The proxy runs on core 0, wrk and the origin on core 1. Only loopback addresses are used.
#
#   bench/upgrade/run.sh                        # defaults: ROUNDS=5 EVERY=3
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ROUNDS=${ROUNDS:-5}
EVERY=${EVERY:-3}
SUT_CORE=${SUT_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}

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

work=$(mktemp -d /tmp/rempart-upgrade.XXXXXX)
chmod 755 "$work"; mkdir -p "$work/www"
head -c 1024 /dev/zero | tr '\0' 'a' > "$work/www/1k"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "rempart run --config $work/" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

origin_port=$(free_port)
sed -e "s#BENCH_DIR#$work#g" -e "s#PORT#$origin_port#g" "$root/bench/proxy/origin.nginx.conf" > "$work/origin.conf"
taskset -c "$LOAD_CORE" nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
wait_port "$origin_port"

port=$(free_port)
admin_port=$(free_port)
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/admin.token"
sed -e "s#ORIGIN_PORT#$origin_port#g" -e "s#127.0.0.1:PORT#127.0.0.1:$port#g" \
  -e "s#127.0.0.1:0#127.0.0.1:$admin_port\"\ntoken_file = \"admin.token#" \
  "$root/bench/proxy/rempart.toml" > "$work/rempart.toml"
grep -q "token_file" "$work/rempart.toml"

start_rempart() {
  taskset -c "$SUT_CORE" "$REMPART_BIN" run --config "$work/rempart.toml" --no-access-log >> "$work/rempart.log" 2>&1 &
  wait_port "$port"
}

# wrk for the whole row; its summary: requests, socket errors, non-2xx.
load() { # seconds -> runs wrk in the background, output in $work/wrk.out
  taskset -c "$LOAD_CORE" wrk -t1 -c64 -d"${1}s" -H 'Host: bench.localhost' "http://127.0.0.1:$port/1k" > "$work/wrk.out" 2>&1 &
  wrk_pid=$!
}
summary() { # label
  local requests errors non2xx
  requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
  errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk.out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.out")
  printf '| %s | %s | %s | %s |\n' "$1" "$requests" "${errors:-0}" "${non2xx:-0}"
}

duration=$(( (ROUNDS + 1) * EVERY + 2 ))
echo "| row | requests | socket errors | non-2xx |"
echo "|---|---|---|---|"

# 1. rempart upgrade, ROUNDS times, then once to a binary that cannot start.
start_rempart
load "$duration"
for _ in $(seq 1 "$ROUNDS"); do
  sleep "$EVERY"
  "$REMPART_BIN" upgrade --config "$work/rempart.toml" > /dev/null
done
sleep 1
if "$REMPART_BIN" upgrade --config "$work/rempart.toml" --binary /bin/false 2> /dev/null; then
  echo "an upgrade to /bin/false was accepted" >&2; exit 1
fi
wait "$wrk_pid"
summary "rempart upgrade x$ROUNDS (+1 refused)"
pkill -TERM -f "rempart run --config $work/rempart.toml" || true
for _ in $(seq 1 100); do pgrep -f "rempart run --config $work/rempart.toml" > /dev/null || break; sleep 0.1; done

# 2. Restart: SIGTERM, then the new process at once (what a service restart does).
start_rempart
load "$duration"
for _ in $(seq 1 "$ROUNDS"); do
  sleep "$EVERY"
  pkill -TERM -f "rempart run --config $work/rempart.toml"
  start_rempart
done
wait "$wrk_pid"
summary "restart x$ROUNDS (SIGTERM, start)"
pkill -TERM -f "rempart run --config $work/rempart.toml" || true
for _ in $(seq 1 100); do pgrep -f "rempart run --config $work/rempart.toml" > /dev/null || break; sleep 0.1; done

# 3. nginx as the proxy, reloaded gracefully (`nginx -s reload`) ROUNDS times.
sed -e "s#BENCH_DIR#$work#g" -e "s#ORIGIN_PORT#$origin_port#g" -e "s#PORT#$port#g" "$root/bench/proxy/proxy.nginx.conf" > "$work/nginx-proxy.conf"
taskset -c "$SUT_CORE" nginx -c "$work/nginx-proxy.conf" -p "$work" & pids+=($!)
wait_port "$port"
load "$duration"
for _ in $(seq 1 "$ROUNDS"); do
  sleep "$EVERY"
  nginx -c "$work/nginx-proxy.conf" -p "$work" -s reload 2> /dev/null
done
wait "$wrk_pid"
summary "nginx -s reload x$ROUNDS"
