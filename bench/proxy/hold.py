#!/usr/bin/env python3
"""Holds N connections to a proxy on loopback, the way a flood holds them, and says so.

  hold.py idle PORT N        one 1 KiB GET each (keep-alive, answer read), then silence
  hold.py slowloris PORT N   a request line and one header each, never the end of the head

Prints "held N" once every connection is in that state, then keeps them until its
standard input closes. Loopback only."""
import socket
import sys

mode, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if mode == "idle":
        s.sendall(b"GET /1k HTTP/1.1\r\nHost: bench.localhost\r\n\r\n")
        f = s.makefile("rb")
        length = 0
        status = f.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            sys.exit(f"answer: {status!r}")
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        f.read(length)
    elif mode == "slowloris":
        s.sendall(b"GET /1k HTTP/1.1\r\nHost: bench.localhost\r\nX-Slow: 1\r\n")
    else:
        sys.exit(f"unknown mode {mode}")
    held.append(s)
print(f"held {len(held)}", flush=True)
sys.stdin.read()
