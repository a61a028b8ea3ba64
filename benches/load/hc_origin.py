"""benches/load/hc_origin.py: the origin of hc_cost.sh. Listens on 127.0.0.1 at every port given
on the command line and answers every HTTP/1.1 request `200 ok` with keep-alive, so each
endpoint of a large cluster passes its health checks. Prints `ready` once every port listens."""

import asyncio
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(ports):
    servers = [await asyncio.start_server(serve, "127.0.0.1", p) for p in ports]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main([int(p) for p in sys.argv[1:]]))
