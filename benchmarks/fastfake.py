"""A minimal, fast OpenAI-compatible fake: raw asyncio HTTP/1.1 keep-alive, canned reply.

It does not parse JSON; it reads the headers and ``Content-Length`` body and answers every
``POST`` with the same small chat completion (``{"updates": []}`` when the request asks for
structured output, i.e. the persona optimizer). Run it as its own process so that its CPU cost
does not land on the benchmarked event loop::

    .venv/bin/python benchmarks/fastfake.py --port 0      # prints "PORT <n>" and serves

``measure()`` (``--self-test``) reports the fake's own cost: requests/s and latency from a
raw-socket keep-alive client, i.e. the floor under any end-to-end figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time


def _http_ok(body: bytes, *, keep_alive: bool = True) -> bytes:
    """A complete HTTP/1.1 200 response carrying a JSON body."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    head += str(len(body)).encode()
    if keep_alive:
        head += b"\r\nConnection: keep-alive"
    return head + b"\r\n\r\n" + body


def completion_body(content: str, completion_id: str) -> bytes:
    """A canned chat completion whose assistant message is ``content``."""
    return json.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": 0,
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105},
        }
    ).encode()


REPLY = completion_body("Sure, happy to help.", "chatcmpl-fast")
RESPONSE = _http_ok(REPLY)
JSON_RESPONSE = _http_ok(completion_body('{"updates": []}', "chatcmpl-fast-json"))
MODELS_RESPONSE = _http_ok(
    json.dumps({"object": "list", "data": [{"id": "fake-model"}]}).encode(), keep_alive=False
)


class FastFake(asyncio.Protocol):
    requests = 0

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            length = 0
            idx = head.find(b"content-length:")
            if idx >= 0:
                length = int(head[idx + 15 :].split(b"\r\n", 1)[0])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            structured = b'"response_format"' in self.buf[end + 4 : total]
            del self.buf[:total]
            FastFake.requests += 1
            assert self.transport is not None
            if head.startswith(b"get"):
                self.transport.write(MODELS_RESPONSE)
            elif structured:  # the persona optimizer: a valid, empty update
                self.transport.write(JSON_RESPONSE)
            else:
                self.transport.write(RESPONSE)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FastFake, "127.0.0.1", port)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


async def start_subprocess() -> tuple[asyncio.subprocess.Process, int]:
    """Start the fake in its own process; return (process, port)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    return proc, int(line.split()[1])


async def measure(port: int, n: int = 20_000, conns: int = 1) -> dict[str, float]:
    """Raw keep-alive POSTs (a 2 kB body like a real prompt): the fake's own cost."""
    body = b'{"model":"fake-model","messages":[' + b'{"role":"user","content":"x"},' * 60 + b"{}]}"
    req = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    lat: list[float] = []

    async def client(count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(count):
            t = time.perf_counter()
            writer.write(req)
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(len(REPLY))
            lat.append(time.perf_counter() - t)
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*[client(n // conns) for _ in range(conns)])
    wall = time.perf_counter() - t0
    lat.sort()
    return {
        "requests": len(lat),
        "req_per_s": len(lat) / wall,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
    }


async def self_test() -> None:
    proc, port = await start_subprocess()
    try:
        for conns in (1, 10):
            result = await measure(port, conns=conns)
            print(f"fake alone, {conns} keep-alive connection(s):", result)
    finally:
        proc.kill()
        await proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    asyncio.run(self_test() if args.self_test else serve(args.port))


if __name__ == "__main__":
    main()
