# Sourced by bench/proxy/run.sh and compare.sh: TLS for the HTTPS rows. One self-signed
# ECDSA P-256 certificate for bench.localhost, made per run under $work (never committed),
# served by every system under test with the same versions, TLS 1.2 and 1.3 (Mozilla's
# "intermediate": HAProxy's and Rempart's defaults; nginx 1.22's default has no TLS 1.3, so it
# is set): wrk then speaks TLS 1.3 to all, and offers each new connection the previous one's
# session, so servers with session tickets resume. (nginx on its default negotiated TLS 1.2,
# whose resumption skips the key exchange that TLS 1.3's keeps: its rows were not comparable.)

# make_cert DIR: DIR/bench.crt, DIR/bench.key, DIR/bench.pem (both, for HAProxy).
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
    -subj /CN=bench.localhost -addext subjectAltName=DNS:bench.localhost \
    -keyout "$1/bench.key" -out "$1/bench.crt" 2>/dev/null
  cat "$1/bench.crt" "$1/bench.key" > "$1/bench.pem"
}

# nginx_tls CONF PORT TLS_PORT DIR: adds an HTTPS listener beside `listen 127.0.0.1:PORT`.
nginx_tls() {
  sed -i "s#listen 127.0.0.1:$2 reuseport;#&\n    listen 127.0.0.1:$3 ssl reuseport;\n    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_certificate $4/bench.crt;\n    ssl_certificate_key $4/bench.key;#" "$1"
}

# haproxy_tls CFG PORT TLS_PORT DIR: adds an HTTPS bind beside `bind 127.0.0.1:PORT`.
haproxy_tls() {
  sed -i "s#^\(\s*\)bind 127.0.0.1:$2\$#&\n\1bind 127.0.0.1:$3 ssl crt $4/bench.pem#" "$1"
}

# rempart_tls TOML TLS_PORT DIR BIN: an HTTPS listener and the tenant's certificate; plain
# HTTP keeps proxying (no redirect) and no HSTS field is added, as with nginx and HAProxy.
# A build older than those two settings gets the listener and certificate only.
rempart_tls() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys
path, port, d = sys.argv[1:]
s = open(path).read()
s = s.replace("[admin]", f'[[listeners]]\naddress = "127.0.0.1:{port}"\nprotocol = "https"\n\n[admin]', 1)
s = s.replace('hosts = ["bench.localhost"]', f'hosts = ["bench.localhost"]\ntls = {{ cert = "{d}/bench.crt", key = "{d}/bench.key" }}\nhttps_redirect = false\nhsts_max_age = "0s"', 1)
open(path, "w").write(s)
PY
  if ! "$4" check --config "$1" >/dev/null 2>&1; then
    sed -i -e '/^https_redirect = false$/d' -e '/^hsts_max_age = "0s"$/d' "$1"
    "$4" check --config "$1" >/dev/null
  fi
}
