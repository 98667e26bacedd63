#!/usr/bin/env python3
"""A TCP proxy on loopback that emulates a slow link: bench/throttle.py LISTEN_PORT UPSTREAM_PORT BYTES_PER_SEC

Bytes from the upstream server to the clients go through one token bucket shared by every connection
(the link's bandwidth); bytes towards the server pass freely. Used by bench/suites/release.sh instead of
nginx's limit_rate, which limits each request separately and lets the first second's worth of bytes of
every response through at once (so objects smaller than one second of bandwidth were not slowed at all).
Prints "ready" once listening. No added latency.
"""
import asyncio
import sys
import time

CHUNK = 64 * 1024


# How far the link may fall behind its schedule and catch up: covers the proxy's own scheduling delays
# between chunks (without it a transfer runs ~20% under the rate) while bursting at most ~10 ms of bytes.
SLACK = 0.01


class Link:
    """Token bucket in debt form: a sender pays for its bytes, then sleeps until the debt is repaid."""

    def __init__(self, rate):
        self.rate = rate
        self.free_at = time.monotonic()

    async def send(self, n):
        now = time.monotonic()
        self.free_at = max(self.free_at, now - SLACK) + n / self.rate
        delay = self.free_at - now
        if delay > 0:
            await asyncio.sleep(delay)


async def pipe(reader, writer, link):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            if link is not None:
                await link.send(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(listen_port, upstream_port, rate):
    link = Link(rate)

    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, upstream_writer, None),
            pipe(upstream_reader, client_writer, link),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
