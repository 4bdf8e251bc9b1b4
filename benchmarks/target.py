"""
A fast benchmark target for tcpmux: echo, Modbus TCP or HTTP/1.1.

    python benchmarks/target.py --protocol modbus --port 5502
    python benchmarks/target.py --protocol echo --port 7007 --latency 2ms

echo: every newline-terminated line is sent back unchanged.

modbus: reads of holding (3) or input (4) registers are answered with values
derived from the request alone, so that a load generator can compute the
exact answer to its own request::

    value[i] = ((address + i) * 40503 + unit) & 0xFFFF

(see L{registerValues}; the transaction id is echoed, so a proxy that rewrites
transaction ids and restores them still gets verifiable answers). Any other
function code is answered with exception 01 (illegal function).

http: keep-alive GETs (no request body) are answered 200 with a small body
derived from the path alone (L{httpBody}), so the load generator can verify
each answer; anything else closes the connection.

--latency answers each request after a delay, every request on its own timer:
pipelined requests are answered concurrently, in the order they arrived.
--connections-limit refuses connections beyond that many at once (a device
that accepts only one client).

On SIGTERM or SIGINT the target prints one JSON line of statistics on stdout
(requests answered, connections accepted, most connections at once) and exits.

Only the standard library, and uvloop when it is installed
(C{--loop}; C{pip install -r benchmarks/rig-requirements.txt}): the target
and the load share a core, and on asyncio's own loop they, rather than the
proxy between them, can set the pace.
"""

import argparse
import asyncio
import json
import signal
import socket
import struct
import sys

HEADER = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id


def loopNames():
    """
    The event loops this Python can run the rig on, the preferred first.
    """
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["uvloop", "asyncio"]


def addLoopOption(parser):
    names = loopNames()
    parser.add_argument(
        "--loop",
        choices=names,
        default=names[0],
        help="the event loop (default: uvloop when installed)",
    )


def runOn(loop, main):
    """
    Run the coroutine C{main} on the event loop named C{loop}.
    """
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def parseDuration(text):
    text = text.strip()
    for suffix, scale in (("ms", 0.001), ("us", 0.000001), ("s", 1.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


def registerValues(unit, address, count):
    """
    The register values the target answers a read of C{count} registers at
    C{address} on C{unit} with.
    """
    return [((address + i) * 40503 + unit) & 0xFFFF for i in range(count)]


def modbusResponse(adu):
    """
    The whole response ADU to one whole request ADU.
    """
    tid, _, _, unit = HEADER.unpack_from(adu)
    fc = adu[7]
    if fc in (3, 4) and len(adu) == 12:
        address, count = struct.unpack_from(">HH", adu, 8)
        if 1 <= count <= 125:
            values = registerValues(unit, address, count)
            return HEADER.pack(tid, 0, 3 + 2 * count, unit) + struct.pack(
                f">BB{count}H", fc, 2 * count, *values
            )
        return HEADER.pack(tid, 0, 3, unit) + bytes((fc | 0x80, 3))
    return HEADER.pack(tid, 0, 3, unit) + bytes((fc | 0x80, 1))


def httpBody(path):
    """
    The body the target answers C{GET path} with.
    """
    return b"ok " + path + b"\n"


def httpResponse(path):
    body = httpBody(path)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
        % len(body)
        + body
    )


class Stats:
    answered = 0
    accepted = 0
    refused = 0
    current = 0
    most = 0
    corrupted = 0


class TargetProtocol(asyncio.Protocol):
    """
    One connection. Subclasses cut C{data} into requests and answer them.
    """

    def __init__(self, options, stats):
        self.options = options
        self.stats = stats
        self.latency = options.latency
        self.buffer = b""
        self.transport = None
        self.counted = False

    def connection_made(self, transport):
        stats = self.stats
        limit = self.options.connections_limit
        if limit and stats.current >= limit:
            stats.refused += 1
            transport.abort()
            return
        self.counted = True
        stats.accepted += 1
        stats.current += 1
        stats.most = max(stats.most, stats.current)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc):
        if self.counted:
            self.stats.current -= 1
        self.transport = None

    def answer(self, response, count):
        """
        Send C{response} (answering C{count} requests) now or after the
        latency.
        """
        self.stats.answered += count
        if self.latency > 0:
            asyncio.get_running_loop().call_later(self.latency, self._send, response)
        else:
            self.transport.write(response)

    def _send(self, response):
        if self.transport is not None:
            self.transport.write(response)


class EchoTarget(TargetProtocol):
    def data_received(self, data):
        if self.buffer:
            data = self.buffer + data
        end = data.rfind(b"\n") + 1
        self.buffer = data[end:]
        if not end:
            return
        whole = data[:end]
        if self.latency > 0:
            # One timer per line, so that pipelined lines are answered
            # concurrently, each after the latency.
            for line in whole.splitlines(keepends=True):
                self.answer(line, 1)
        else:
            self.answer(whole, whole.count(b"\n"))


class ModbusTarget(TargetProtocol):
    corruptEvery = 0
    previous = None

    def data_received(self, data):
        if self.buffer:
            data = self.buffer + data
        size = len(data)
        start = 0
        responses = []
        while size - start >= 6:
            length = data[start + 4] << 8 | data[start + 5]
            if data[start + 2] or data[start + 3] or not 2 <= length <= 254:
                self.transport.abort()
                return
            end = start + 6 + length
            if end > size:
                break
            responses.append(modbusResponse(data[start:end]))
            start = end
        self.buffer = data[start:]
        if not responses:
            return
        every = self.options.corrupt_every
        if every:
            responses = [self.corrupt(r) for r in responses]
        if self.latency > 0:
            for response in responses:
                self.answer(response, 1)
        else:
            self.answer(b"".join(responses), len(responses))

    def corrupt(self, response):
        """
        For checking the checker: every --corrupt-every'th answer is wrong,
        alternately a changed register value and the answer to the previous
        request (a stale answer, as a proxy that crossed its wires would
        deliver).
        """
        n = self.stats.answered + 1
        previous, self.previous = self.previous, response
        if n % self.options.corrupt_every:
            return response
        self.stats.corrupted += 1
        if (n // self.options.corrupt_every) % 2 and previous is not None:
            return previous
        if len(response) > 9:
            return response[:-1] + bytes(((response[-1] + 1) & 0xFF,))
        return response


class HTTPTarget(TargetProtocol):
    def data_received(self, data):
        if self.buffer:
            data = self.buffer + data
        start = 0
        responses = []
        while True:
            end = data.find(b"\r\n\r\n", start)
            if end < 0:
                break
            line = data[start : data.find(b"\r\n", start)].split(b" ")
            if len(line) != 3 or line[0] != b"GET" or b"content-length:" in data[start:end].lower():
                self.transport.abort()
                return
            responses.append(httpResponse(line[1]))
            start = end + 4
        self.buffer = data[start:]
        if not responses:
            return
        if self.latency > 0:
            for response in responses:
                self.answer(response, 1)
        else:
            self.answer(b"".join(responses), len(responses))


async def serve(options):
    stats = Stats()
    loop = asyncio.get_running_loop()
    protocol = {"echo": EchoTarget, "modbus": ModbusTarget, "http": HTTPTarget}[options.protocol]
    if options.corrupt_every and options.protocol == "echo":
        raise SystemExit("--corrupt-every is only for modbus")
    server = await loop.create_server(
        lambda: protocol(options, stats),
        options.host,
        options.port,
        backlog=4096,
        reuse_address=True,
    )
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"listening": port}), flush=True)
    stopped = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: stopped.done() or stopped.set_result(None))
    await stopped
    server.close()
    print(
        json.dumps(
            {
                "answered": stats.answered,
                "accepted": stats.accepted,
                "refused": stats.refused,
                "most_connections": stats.most,
                "corrupted": stats.corrupted,
            }
        ),
        flush=True,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--protocol", "-p", choices=("echo", "modbus", "http"), default="modbus")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument(
        "--latency",
        type=parseDuration,
        default=0.0,
        help="answer each request after this long (2ms, 0.002); concurrently "
        "for pipelined requests",
    )
    parser.add_argument(
        "--connections-limit",
        type=int,
        default=0,
        help="refuse connections beyond this many at once (0: no limit)",
    )
    parser.add_argument(
        "--corrupt-every",
        type=int,
        default=0,
        help="modbus: make every Nth answer wrong (to check the load "
        "generator's verification)",
    )
    addLoopOption(parser)
    options = parser.parse_args(argv)
    try:
        runOn(options.loop, serve(options))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
