#!/usr/bin/env python3
"""benches/load/handover_client.py: the client of benches/load/handover.sh (issue #9).

Python stdlib only (asyncio). Through the proxy on 127.0.0.1:PORT it opens KEEPALIVE HTTP/1.1
keep-alive connections (one `GET /` each, which must answer 200) and WEBSOCKETS WebSockets to
`/ws` (one echo each), writes READY_FILE and waits for GO_FILE, which the script creates right
after it started the proxy's next generation. From then on it watches, every few ms:
  cutover   the admin's /server_info reports the new restart epoch and state LIVE;
  old exit  the old generation's pid is gone (or a zombie).
Meanwhile it probes every connection: one round while the new generation starts, rounds at
cutover + 0, 0.5, 1, 1.5, 2 s (each connection at a random moment of the round, so the load is
spread) and a final round once the old generation exited (or --exit-timeout passed). A probe is
one more request on the same TCP connection, or one more echo on the same WebSocket.

The script writes "<start time> <pid of the new generation>" to GO_FILE; a new generation that
exits before it serves ends the wait.

Every keep-alive connection ends up as one of:
  open    every probe answered on the same TCP connection (moved, or still served by the old
          generation), still open at the end;
  closed  the server closed it while it was idle, or answered with `Connection: close` (a real
          client would reconnect: not an error, but counted);
  error   a probe sent and not answered (timeout, reset, closed while waiting) or a bad response.
Every WebSocket ends up as alive (every echo came back) or cut (closed by the server, an echo
lost or wrong). Prints one JSON object with the counts and timestamps.
"""

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import socket
import struct
import sys
import threading
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: handover-client\r\n\r\n"


def now():
    return time.time()


class Conn(asyncio.Protocol):
    """What both kinds of connection share: the transport, a receive buffer, the one answer
    waited for, and how and when the connection closed."""

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.waiter = None  # future of the outstanding request / echo, if any
        self.closed_at = None
        self.close_how = None  # "fin" / "reset" (Http1 also: "after-connection-close")
        self.close_idle = None  # True when it closed with nothing outstanding
        self.connected = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        if not self.connected.done():
            self.connected.set_result(True)

    async def _wait(self, timeout):
        """The answer to what the caller writes right after calling this (before awaiting)."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(self.waiter), timeout)
        finally:
            self.waiter = None

    def closed(self, how):
        """Records the close (how, now, idle or not) and fails the outstanding wait, if any."""
        self.closed_at = now()
        self.close_how = how
        self.close_idle = self.waiter is None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"closed while waiting ({self.close_how})"))
        self.waiter = None


class Http1(Conn):
    """A keep-alive connection: one request at a time, responses with Content-Length or chunked."""

    def __init__(self):
        super().__init__()
        self.unsolicited = 0  # bytes received with no request outstanding
        self.server_said_close = False

    def data_received(self, data):
        if self.waiter is None:
            self.unsolicited += len(data)
            return
        self.buf += data
        parsed = parse_response(self.buf)
        if parsed is not None:
            status, headers, used = parsed
            del self.buf[:used]
            w, self.waiter = self.waiter, None
            if not w.done():
                w.set_result(status)
            if "close" in headers.get("connection", "").lower():
                # As clients do: this connection is done; close our side now.
                self.server_said_close = True
                self.transport.close()

    def connection_lost(self, exc):
        if self.closed_at is not None:  # already seen by peer_closed()
            return
        if self.server_said_close:
            self.closed("after-connection-close")
        else:
            self.closed("reset" if exc is not None else "fin")

    async def request(self, timeout):
        """Status code of one GET /; raises on timeout or close."""
        if self.closed_at is not None:
            raise ConnectionError("already closed")
        how = peer_closed(self.transport)
        if how:
            # The server closed it while idle; the loop has not read that yet. A client that
            # watches its idle connections (most do) would not send on it: not an error.
            self.closed_at, self.close_how, self.close_idle = now(), how, True
            raise IdleClosed(how)
        fut = self._wait(timeout)
        self.transport.write(REQUEST)
        return await fut


class IdleClosed(ConnectionError):
    """The server had closed the connection before the client sent on it."""


def peer_closed(transport):
    """"fin" or "reset" when the peer's close already waits in the kernel, else None."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        with socket.socket(fileno=os.dup(sock.fileno())) as s:
            return "fin" if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"" else None
    except BlockingIOError:
        return None
    except OSError:
        return "reset"


def parse_response(buf):
    """(status, headers, bytes used) for a whole response at the start of buf, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        status = -1
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    pos = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            try:
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            except ValueError:
                return (-1, headers, len(buf))
            pos = eol + 2
            if size == 0:
                fin = buf.find(b"\r\n\r\n", pos - 2)
                return None if fin < 0 else (status, headers, fin + 4)
            if len(buf) < pos + size + 2:
                return None
            pos += size + 2
    n = int(headers.get("content-length", "0") or 0)
    if len(buf) < pos + n:
        return None
    return status, headers, pos + n


class WebSocket(Conn):
    """A client WebSocket: handshake, then masked text frames whose echo it waits for."""

    def __init__(self):
        super().__init__()
        self.upgraded = False

    def data_received(self, data):
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = bytes(self.buf[: self.buf.find(b"\r\n")]).decode("latin-1")
            del self.buf[: end + 4]
            self.upgraded = " 101 " in status_line + " "
            self._resolve(("handshake", status_line))
            return
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n, pos = b1 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                (n,) = struct.unpack("!H", self.buf[2:4])
                pos = 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                (n,) = struct.unpack("!Q", self.buf[2:10])
                pos = 10
            if len(self.buf) < pos + n:
                return
            payload = bytes(self.buf[pos : pos + n])
            del self.buf[: pos + n]
            self._resolve(("frame", b0 & 0x0F, payload))

    def _resolve(self, value):
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_result(value)

    def connection_lost(self, exc):
        self.closed("reset" if exc is not None else "fin")

    async def handshake(self, timeout):
        key = base64.b64encode(os.urandom(16)).decode()
        fut = self._wait(timeout)
        self.transport.write(
            (
                "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        _, status_line = await fut
        return self.upgraded, status_line

    async def echo(self, payload, timeout):
        if self.closed_at is not None:
            raise ConnectionError("already closed")
        mask = os.urandom(4)
        masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        fut = self._wait(timeout)
        self.transport.write(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
        got = await fut
        if got[0] != "frame" or got[1] != 0x1 or got[2] != payload:
            raise ValueError(f"unexpected frame {got[:2]}")


async def open_all(args, loop):
    sem = asyncio.Semaphore(args.open_concurrency)
    setup_errors = []

    async def one_http():
        async with sem:
            try:
                _, p = await asyncio.wait_for(
                    loop.create_connection(Http1, "127.0.0.1", args.port), args.timeout
                )
                status = await p.request(args.timeout)
                if status != 200 or p.server_said_close:
                    raise ValueError(f"status {status}")
                return p
            except (OSError, ValueError, asyncio.TimeoutError) as e:
                setup_errors.append(f"http: {type(e).__name__}: {e}")
                return None

    async def one_ws(i):
        async with sem:
            try:
                _, p = await asyncio.wait_for(
                    loop.create_connection(WebSocket, "127.0.0.1", args.port), args.timeout
                )
                ok, line = await p.handshake(args.timeout)
                if not ok:
                    raise ValueError(f"no upgrade: {line}")
                await p.echo(f"hello {i}".encode(), args.timeout)
                return p
            except (OSError, ValueError, asyncio.TimeoutError) as e:
                setup_errors.append(f"ws: {type(e).__name__}: {e}")
                return None

    https = await asyncio.gather(*(one_http() for _ in range(args.keepalive)))
    wss = await asyncio.gather(*(one_ws(i) for i in range(args.websockets)))
    return [p for p in https if p], [p for p in wss if p], setup_errors


def pid_gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def dechunk(data):
    """The payload of a whole chunked body."""
    out, pos = bytearray(), 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


def server_info(port):
    """(restart_epoch, state) from the admin's /server_info, or None (blocking, short timeouts)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
            # HTTP/1.1 (Envoy's admin refuses 1.0); the answer may be chunked.
            c.sendall(b"GET /server_info HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            c.settimeout(1.0)
            data = b""
            while True:
                got = c.recv(65536)
                if not got:
                    break
                data += got
        head, _, body = data.partition(b"\r\n\r\n")
        if b"chunked" in head.lower():
            body = dechunk(body)
        body = json.loads(body)
        epoch = int(body.get("command_line_options", {}).get("restart_epoch", -1))
        return epoch, body.get("state")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def monitor(args, marks):
    """Thread: fills marks["cutover"] and marks["old_exit"] (wall-clock seconds). A thread, not a
    task, so that the event loop's work (thousands of probes) does not delay the observations."""
    deadline = marks["go"] + args.exit_timeout
    while now() < deadline:
        if "old_exit" not in marks and pid_gone(args.old_pid):
            marks["old_exit"] = now()
        if "cutover" not in marks and "new_pid" in marks and pid_gone(marks["new_pid"]):
            marks["new_failed"] = now()  # the new generation exited before it served
            return
        if "cutover" not in marks:
            info = server_info(args.admin)
            marks["last_admin_info"] = info
            if info and info[0] == args.epoch and info[1] == "LIVE":
                marks["cutover"] = now()
        if "cutover" in marks and "old_exit" in marks:
            return
        time.sleep(0.005)


async def probe_round(https, wss, stats, tag, spread, timeout):
    async def http_probe(p, st):
        await asyncio.sleep(random.uniform(0, spread))
        if p.closed_at is not None or st["state"] != "open":
            return
        try:
            status = await p.request(timeout)
            if status != 200:
                st["state"], st["why"] = "error", f"{tag}: status {status}"
            else:
                st["answered"] += 1
                st["last_round"] = tag
                if p.server_said_close:
                    st["state"], st["why"] = "closed", f"{tag}: Connection: close"
        except IdleClosed as e:
            st["state"], st["why"] = "closed", f"{tag}: closed while idle ({e})"
        except (ConnectionError, OSError, asyncio.TimeoutError) as e:
            st["state"], st["why"] = "error", f"{tag}: {type(e).__name__}: {e}"

    async def ws_probe(p, st, i):
        await asyncio.sleep(random.uniform(0, spread))
        if p.closed_at is not None or st["state"] != "alive":
            return
        try:
            await p.echo(f"{tag} {i}".encode(), timeout)
            st["answered"] += 1
            st["last_round"] = tag
        except (ConnectionError, OSError, ValueError, asyncio.TimeoutError) as e:
            st["state"], st["why"] = "cut", f"{tag}: {type(e).__name__}: {e}"

    tasks = [http_probe(p, st) for p, st in zip(https, stats["http"])]
    tasks += [ws_probe(p, st, i) for i, (p, st) in enumerate(zip(wss, stats["ws"]))]
    await asyncio.gather(*tasks)


def settle(conns, stats, idle_state):
    """Connections closed while idle since the last round: state idle_state, unless decided."""
    for p, st in zip(conns, stats):
        if p.closed_at is not None and st["state"] in ("open", "alive"):
            st["state"] = idle_state
            st["why"] = f"closed while idle ({p.close_how})"


def bucket(t, marks):
    if t is None:
        return None
    if abs(t - marks.get("old_exit", float("inf"))) < 0.05:
        return "at-old-exit"  # within 50 ms: its sockets closed as it exited
    if t < marks.get("cutover", float("inf")):
        return "before-cutover"
    if t < marks.get("old_exit", float("inf")):
        return "before-old-exit"
    return "after-old-exit"


async def main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.keepalive + args.websockets + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
    loop = asyncio.get_running_loop()
    t_setup = now()
    https, wss, setup_errors = await open_all(args, loop)
    out = {
        "keepalive_wanted": args.keepalive,
        "websockets_wanted": args.websockets,
        "keepalive_opened": len(https),
        "websockets_opened": len(wss),
        "setup_errors": len(setup_errors),
        "setup_error_samples": setup_errors[:5],
        "setup_s": round(now() - t_setup, 3),
    }
    with open(args.ready_file, "w") as f:
        json.dump(out, f)
    while not os.path.exists(args.go_file):
        await asyncio.sleep(0.01)
        if now() - t_setup > args.go_timeout:
            out["error"] = "no go signal"
            print(json.dumps(out))
            return 1
    marks = {"go": now()}
    try:  # the script writes the time it started the new generation, and its pid
        with open(args.go_file) as f:
            fields = f.read().split()
        marks["go"] = min(marks["go"], float(fields[0]))
        marks["new_pid"] = int(fields[1])
    except (OSError, ValueError, IndexError):
        pass
    stats = {
        "http": [{"state": "open", "answered": 0, "last_round": None, "why": None} for _ in https],
        "ws": [{"state": "alive", "answered": 0, "last_round": None, "why": None} for _ in wss],
    }
    mon = threading.Thread(target=monitor, args=(args, marks), daemon=True)
    mon.start()
    rounds = ["starting"]
    await probe_round(https, wss, stats, "starting", args.spread, args.timeout)
    while "cutover" not in marks and mon.is_alive():
        await asyncio.sleep(0.01)
    if "cutover" in marks:
        for k in range(args.rounds):
            at = marks["cutover"] + k * args.round_interval
            await asyncio.sleep(max(0.0, at - now()))
            tag = f"cutover+{k * args.round_interval:g}s"
            rounds.append(tag)
            settle(https, stats["http"], "closed")
            settle(wss, stats["ws"], "cut")
            await probe_round(https, wss, stats, tag, args.spread, args.timeout)
    while mon.is_alive():
        await asyncio.sleep(0.01)
    await asyncio.sleep(args.final_delay)
    settle(https, stats["http"], "closed")
    settle(wss, stats["ws"], "cut")
    rounds.append("final")
    await probe_round(https, wss, stats, "final", args.spread, args.timeout)
    settle(https, stats["http"], "closed")
    settle(wss, stats["ws"], "cut")

    def count(sts, state):
        return sum(1 for s in sts if s["state"] == state)

    def close_hist(conns, sts, state):
        h = {}
        for p, s in zip(conns, sts):
            if s["state"] == state:
                key = f"{bucket(p.closed_at, marks)}/{p.close_how}"
                h[key] = h.get(key, 0) + 1
        return h

    def close_times(conns, sts, states):
        """ms after cutover at which those connections closed: min, median, max."""
        if "cutover" not in marks:
            return None
        ts = sorted(
            (p.closed_at - marks["cutover"]) * 1000
            for p, s in zip(conns, sts)
            if s["state"] in states and p.closed_at is not None
        )
        if not ts:
            return None
        return {"min": round(ts[0], 1), "median": round(ts[len(ts) // 2], 1), "max": round(ts[-1], 1)}

    errors = [s["why"] for s in stats["http"] if s["state"] == "error"]
    cuts = [s["why"] for s in stats["ws"] if s["state"] == "cut"]
    out.update(
        {
            "rounds": rounds,
            "keepalive_open": count(stats["http"], "open"),
            "keepalive_closed": count(stats["http"], "closed"),
            "keepalive_errors": len(errors),
            "keepalive_closed_detail": close_hist(https, stats["http"], "closed"),
            "keepalive_error_samples": sorted(set(errors))[:5],
            "keepalive_unsolicited_bytes": sum(p.unsolicited for p in https),
            "ws_alive": count(stats["ws"], "alive"),
            "ws_cut": len(cuts),
            "ws_cut_detail": close_hist(wss, stats["ws"], "cut"),
            "keepalive_closed_ms_after_cutover": close_times(https, stats["http"], ("closed", "error")),
            "ws_cut_ms_after_cutover": close_times(wss, stats["ws"], ("cut",)),
            "ws_cut_samples": sorted(set(cuts))[:5],
            "final_answered_http": sum(1 for s in stats["http"] if s["last_round"] == "final"),
            "final_answered_ws": sum(1 for s in stats["ws"] if s["last_round"] == "final"),
            "go": marks["go"],
            "cutover": marks.get("cutover"),
            "old_exit": marks.get("old_exit"),
            "last_admin_info": marks.get("last_admin_info"),
            "new_generation_exited_before_serving": "new_failed" in marks,
        }
    )
    if marks.get("cutover") and marks.get("old_exit"):
        out["old_exit_after_cutover_ms"] = round((marks["old_exit"] - marks["cutover"]) * 1000, 1)
    if marks.get("cutover"):
        out["go_to_cutover_ms"] = round((marks["cutover"] - marks["go"]) * 1000, 1)
    for p in https + wss:
        if p.transport is not None:
            p.transport.close()
    print(json.dumps(out))
    return 0


def parse_args():
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--port", type=int, required=True, help="proxy listener")
    a.add_argument("--admin", type=int, required=True, help="proxy admin port")
    a.add_argument("--old-pid", type=int, required=True, help="the old generation's pid")
    a.add_argument("--epoch", type=int, required=True, help="the new generation's restart epoch")
    a.add_argument("--keepalive", type=int, default=5000)
    a.add_argument("--websockets", type=int, default=200)
    a.add_argument("--ready-file", required=True)
    a.add_argument("--go-file", required=True)
    a.add_argument("--go-timeout", type=float, default=600)
    a.add_argument("--rounds", type=int, default=5, help="probe rounds from cutover on")
    a.add_argument("--round-interval", type=float, default=0.5)
    a.add_argument("--spread", type=float, default=0.4, help="each round's probes spread over")
    a.add_argument("--timeout", type=float, default=5.0, help="per request/echo")
    a.add_argument("--exit-timeout", type=float, default=90, help="wait for the old gen's exit")
    a.add_argument("--final-delay", type=float, default=0.5, help="after the old gen exited")
    a.add_argument("--open-concurrency", type=int, default=200)
    return a.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
