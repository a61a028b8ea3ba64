#!/usr/bin/env python3
"""benches/load/tcp_bench.py: the origin and the client of tcp_proxy.sh (127.0.0.1 only).

  tcp_bench.py origin PORT         accept forever: a connection's first byte says what it is:
                                   'B' bulk (read to EOF, answer the byte count as 8 bytes, close),
                                   'E' echo one byte back and wait for the close
  tcp_bench.py bulk PORT BYTES     one connection: send 'B' and BYTES (64 KiB writes), half-close,
                                   read the count; prints the seconds it took
  tcp_bench.py churn PORT N        N connections one after another: connect, send 'E', read one
                                   byte, close; prints the seconds it took
"""
import socket
import struct
import sys
import threading
import time

CHUNK = 64 * 1024


def serve_one(c):
    with c:
        kind = c.recv(1)
        if kind == b"B":
            total = 0
            while True:
                b = c.recv(1 << 20)
                if not b:
                    break
                total += len(b)
            c.sendall(struct.pack("!Q", total))
        elif kind == b"E":
            c.sendall(b"e")
            c.recv(1)


def origin(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1024)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve_one, args=(c,), daemon=True).start()


def bulk(port, nbytes):
    buf = b"x" * CHUNK
    start = time.monotonic()
    c = socket.create_connection(("127.0.0.1", port), timeout=60)
    c.sendall(b"B")
    sent = 0
    while sent < nbytes:
        n = min(CHUNK, nbytes - sent)
        c.sendall(buf[:n])
        sent += n
    c.shutdown(socket.SHUT_WR)
    got = b""
    while len(got) < 8:
        b = c.recv(8 - len(got))
        if not b:
            break
        got += b
    took = time.monotonic() - start
    c.close()
    if len(got) != 8 or struct.unpack("!Q", got)[0] != nbytes:
        sys.exit(f"bulk: the origin did not get {nbytes} bytes")
    print(f"{took:.4f}")


def churn(port, n):
    start = time.monotonic()
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"E")
        if c.recv(1) != b"e":
            sys.exit("churn: no echo")
        c.close()
    print(f"{time.monotonic() - start:.4f}")


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "origin":
        origin(port)
    elif mode == "bulk":
        bulk(port, int(sys.argv[3]))
    elif mode == "churn":
        churn(port, int(sys.argv[3]))
    else:
        sys.exit(__doc__)
