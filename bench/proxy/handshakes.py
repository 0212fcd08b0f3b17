#!/usr/bin/env python3
"""Full TLS handshakes, one after another, for a while: a client that never resumes (each
connection starts without a session), unlike wrk, which offers the last one.

  handshakes.py PORT SECONDS PROCESSES

Each process connects to 127.0.0.1:PORT (SNI bench.localhost), completes a handshake, sends
`GET /1k` with `Connection: close`, reads the answer to its end and closes; prints one line,
"RESULT requests=N errors=E seconds=S". Loopback only."""
import multiprocessing
import socket
import ssl
import sys
import time

REQUEST = b"GET /1k HTTP/1.1\r\nHost: bench.localhost\r\nConnection: close\r\n\r\n"


def worker(port, seconds, out):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    done = errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with context.wrap_socket(raw, server_hostname="bench.localhost") as tls:
                    tls.sendall(REQUEST)
                    answer = b""
                    while True:
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        answer += chunk
                    if answer.startswith(b"HTTP/1.1 200"):
                        done += 1
                    else:
                        errors += 1
        except (OSError, ssl.SSLError):
            errors += 1
    out.put((done, errors))


if __name__ == "__main__":
    port, seconds, processes = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    out = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=worker, args=(port, seconds, out)) for _ in range(processes)]
    start = time.monotonic()
    for w in workers:
        w.start()
    results = [out.get() for _ in workers]
    for w in workers:
        w.join()
    took = time.monotonic() - start
    requests = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    print(f"RESULT rps={requests / took:.1f} p50_us=0 p99_us=0 requests={requests} errors={errors} non2xx=0")
