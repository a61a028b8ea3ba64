#!/usr/bin/env python3
"""benches/load/ws_origin.py: a minimal WebSocket echo origin for benches/load/handover.sh.

Python stdlib only (asyncio). Listens on 127.0.0.1:PORT, answers an HTTP/1.1 Upgrade to
`websocket` (RFC 6455: 101 with Sec-WebSocket-Accept) and echoes every text/binary message back,
unmasked, as the server side must. Pings get pongs, a close frame gets a close frame back. Any
other request gets a 200 with a short body, so the origin can be probed with curl.

usage: ws_origin.py PORT
"""

import asyncio
import base64
import hashlib
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"
MAX_PAYLOAD = 1 << 20


async def read_frame(reader):
    """One frame: (fin, opcode, payload); raises IncompleteReadError at EOF."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    if n > MAX_PAYLOAD:
        raise ValueError(f"frame of {n} bytes is too large")
    mask = await reader.readexactly(4) if b1 & 0x80 else None
    data = await reader.readexactly(n)
    if mask:
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
    return bool(b0 & 0x80), b0 & 0x0F, data


def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


async def handle(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        key = headers.get("sec-websocket-key")
        if headers.get("upgrade", "").lower() != "websocket" or not key:
            body = b"ws origin\n"
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await writer.drain()
        while True:
            _fin, op, data = await read_frame(reader)
            if op in (0x0, 0x1, 0x2):
                writer.write(frame(op, data))
            elif op == 0x9:
                writer.write(frame(0xA, data))
            elif op == 0x8:
                writer.write(frame(0x8, data[:2]))
                await writer.drain()
                return
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: ws_origin.py PORT")
    try:
        asyncio.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
