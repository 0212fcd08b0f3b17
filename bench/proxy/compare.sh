#!/usr/bin/env bash
# Two builds of Rempart side by side on the proxied 1 KiB GET: both run (one at a time under
# load) on core 0 with bench/proxy/rempart.toml, the origin (nginx) and wrk on core 1; RUNS
# interleaved runs of DURATION per build and connection count; medians and the ratio B/A.
# For a change's cost on the request path when the VM's throughput drifts between full
# bench/proxy runs. Loopback only.
#
#   bench/proxy/compare.sh /tmp/old/rempart target/release/rempart
#   RUNS=9 DURATION=5s CONNS="64 256" bench/proxy/compare.sh A B
#   MODE=tls bench/proxy/compare.sh A B       # HTTPS, kept-alive connections
#   MODE=tls-new bench/proxy/compare.sh A B   # HTTPS, a new connection (handshake) per request
#   MODE=close bench/proxy/compare.sh A B     # plain HTTP, a new connection per request
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/tls.sh"
MODE=${MODE:-plain}
A=${1:?first build}
B=${2:?second build}
RUNS=${RUNS:-7}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-"64 256"}
work=$(mktemp -d /tmp/rempart-compare.XXXXXX)
chmod 755 "$work"; mkdir -p "$work/www"
head -c 1024 /dev/zero | tr '\0' 'a' > "$work/www/1k"
make_cert "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
origin=$(free_port)
sed -e "s#BENCH_DIR#$work#g" -e "s#PORT#$origin#g" "$here/origin.nginx.conf" > "$work/origin.conf"
taskset -c 1 nginx -c "$work/origin.conf" -p "$work" & pids+=($!)
wait_port "$origin"
urls=()
close=(); case $MODE in tls-new|close) close=(-H "Connection: close");; esac
for bin in "$A" "$B"; do
  port=$(free_port); tls_port=$(free_port)
  mkdir -p "$work/$port"
  sed -e "s#ORIGIN_PORT#$origin#g" -e "s#PORT#$port#g" "$here/rempart.toml" > "$work/$port/rempart.toml"
  rempart_tls "$work/$port/rempart.toml" "$tls_port" "$work" "$bin"
  taskset -c 0 "$bin" run --config "$work/$port/rempart.toml" --no-access-log > "$work/$port/log" 2>&1 & pids+=($!)
  wait_port "$port"; wait_port "$tls_port"
  url="http://127.0.0.1:$port/1k"; case $MODE in tls|tls-new) url="https://127.0.0.1:$tls_port/1k";; esac
  taskset -c 1 wrk -t1 -c256 -d2s -H "Host: bench.localhost" "${close[@]}" "$url" > /dev/null 2>&1
  urls+=("$url")
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "mode: $MODE"
echo "| conns | A req/s (median of $RUNS) | B req/s | B/A | per-run B/A |"
echo "|---|---|---|---|---|"
for c in $CONNS; do
  : > "$work/a"; : > "$work/b"; : > "$work/r"
  for _ in $(seq 1 "$RUNS"); do
    ra=$(taskset -c 1 wrk -t1 -c"$c" -d"$DURATION" -H "Host: bench.localhost" "${close[@]}" "${urls[0]}" | awk '/Requests\/sec/ {print $2}')
    rb=$(taskset -c 1 wrk -t1 -c"$c" -d"$DURATION" -H "Host: bench.localhost" "${close[@]}" "${urls[1]}" | awk '/Requests\/sec/ {print $2}')
    echo "$ra" >> "$work/a"; echo "$rb" >> "$work/b"
    awk -v a="$ra" -v b="$rb" 'BEGIN {printf "%.3f\n", b/a}' >> "$work/r"
  done
  ma=$(median < "$work/a"); mb=$(median < "$work/b")
  echo "| $c | ${ma%.*} | ${mb%.*} | $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.3f", b/a}') | $(sort -n "$work/r" | head -1)-$(sort -n "$work/r" | tail -1) |"
done
