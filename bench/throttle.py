#!/usr/bin/env python3
"""A TCP proxy on loopback that emulates a slow link:

    bench/throttle.py LISTEN_PORT UPSTREAM_PORT BYTES_PER_SEC [RTT_MS]

Bytes from the upstream server to the clients go through one token bucket shared by every connection
(the link's bandwidth); bytes towards the server pass freely. Used by bench/suites/release.sh instead of
nginx's limit_rate, which limits each request separately and lets the first second's worth of bytes of
every response through at once (so objects smaller than one second of bandwidth were not slowed at all).

With RTT_MS (bench/suites/lazy.sh), every byte also arrives RTT_MS/2 later than it was sent, in each
direction, and a new connection's first bytes are held one more RTT_MS: the TCP handshake a real link
would cost before the client can send its request. Prints "ready" once listening.
"""
import asyncio
import sys
import time

CHUNK = 64 * 1024
# Bytes a direction may hold in flight (read from one side, not yet written to the other): beyond it
# the proxy stops reading, so the sender feels back-pressure as it would on a real link.
IN_FLIGHT = 4 << 20


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
    """One direction without added latency (the original behaviour)."""
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


async def delayed_pipe(reader, writer, link, one_way, not_before):
    """One direction with latency: bytes leave the link (bandwidth first) and arrive `one_way` later.

    A reader task timestamps chunks as they leave the bucket; a writer task delivers each at its time, so
    latency and bandwidth add up the way they do on a wire (a chunk's last byte arrives at send + size /
    rate + one_way), and several chunks are in flight at once.
    """
    queue = asyncio.Queue()
    budget = asyncio.Semaphore(max(1, IN_FLIGHT // CHUNK))

    async def receive():
        try:
            while True:
                await budget.acquire()
                data = await reader.read(CHUNK)
                if not data:
                    break
                if link is not None:
                    await link.send(len(data))
                await queue.put((max(time.monotonic(), not_before) + one_way, data))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            await queue.put((None, None))

    async def deliver():
        try:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(data)
                budget.release()
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    await asyncio.gather(receive(), deliver())


async def main(listen_port, upstream_port, rate, rtt):
    link = Link(rate)

    async def handle(client_reader, client_writer):
        accepted = time.monotonic()
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        if rtt <= 0:
            await asyncio.gather(
                pipe(client_reader, upstream_writer, None),
                pipe(upstream_reader, client_writer, link),
            )
            return
        # The client's first request leaves after the handshake (one RTT after connecting).
        await asyncio.gather(
            delayed_pipe(client_reader, upstream_writer, None, rtt / 2, accepted + rtt),
            delayed_pipe(upstream_reader, client_writer, link, rtt / 2, 0.0),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    rtt_ms = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), rtt_ms / 1000.0))
