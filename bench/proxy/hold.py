#!/usr/bin/env python3
"""Holds N connections to a proxy on loopback, the way a flood holds them, and says so.

  hold.py idle PORT N        one 1 KiB GET each (keep-alive, answer read), then silence
  hold.py slowloris PORT N   a request line and one header each, never the end of the head
  hold.py h2 PORT N          HTTP/2 by prior knowledge: one 1 KiB GET each, then silence

Prints "held N" once every connection is in that state, then keeps them until its
standard input closes. Loopback only."""
import socket
import struct
import sys


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(index, value):
    """An HPACK field with an indexed name and a literal value, not Huffman-coded."""
    return bytes([0x40 | index, len(value)]) + value


def h2_get(s):
    """One GET /1k on stream 1, its answer read to the end; the server's settings acknowledged."""
    block = b"\x82\x86" + literal(4, b"/1k") + literal(1, b"bench.localhost")
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
    f = s.makefile("rb")
    while True:
        head = f.read(9)
        if len(head) < 9:
            sys.exit("h2: closed before the answer")
        length = int.from_bytes(head[:3], "big")
        kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        f.read(length)
        if kind == 4 and not flags & 1:
            s.sendall(frame(4, 1, 0))
        if kind == 7:
            sys.exit("h2: GOAWAY")
        if stream == 1 and kind in (0, 1) and flags & 1:
            return

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
    elif mode == "h2":
        h2_get(s)
    elif mode == "slowloris":
        s.sendall(b"GET /1k HTTP/1.1\r\nHost: bench.localhost\r\nX-Slow: 1\r\n")
    else:
        sys.exit(f"unknown mode {mode}")
    held.append(s)
print(f"held {len(held)}", flush=True)
sys.stdin.read()
