"""
A closed-loop load generator for tcpmux benchmarks: many client connections
in one process, each sending one request, verifying the whole answer
byte-for-byte, then sending the next.

    python benchmarks/load.py --protocol modbus --port 5020 --clients 100

Every request is unique to its client and sequence number, and the answer
to it is known in advance:

  - echo: the line C{c<client> s<sequence> xxx...\\n} comes back unchanged;
  - http: C{GET /c<client>/s<sequence>} on a keep-alive HTTP/1.1
    connection; the answer must be C{200} with the body that
    L{target.httpBody} gives for that path (header names and order may be
    rewritten by a proxy, the status line and body may not);
  - modbus: a read of holding registers with a transaction id, unit id,
    address and count derived from the client and sequence number; the
    answer must carry the same transaction id and unit id and the register
    values that L{target.registerValues} gives for that request. No two
    clients (below 65,536 of them) share a (transaction id, address) pair,
    so an answer delivered to the wrong client, or a stale one, is caught.

Any byte that differs is a mismatch: the connection is closed and counted.
A request still unanswered when the run drains is counted as lost.

Run by C{bench.py} (which combines several processes with distinct
C{--first-id}), it talks over stdin/stdout:

  1. connects every client, prints C{{"ready": connected, "failed": n}};
  2. reads a line C{GO <start> <measure-from> <measure-until>} (wall-clock
     seconds): starts at C{start}, counts the round trips completed inside
     the window, stops issuing requests at its end and drains;
  3. prints one JSON line of results, and writes the latencies (seconds,
     array of doubles) to C{--latency-file} if given.

With C{--idle}, each client makes C{--idle-requests} round trips after GO,
the process prints C{{"idle": clients}} and keeps the connections open until
stdin closes.

Standalone (no stdin protocol), C{--duration} runs at once and prints a
summary: C{python benchmarks/load.py --standalone --port 5020 --clients 10}.
"""

import argparse
import asyncio
import json
import socket
import struct
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from target import addLoopOption, httpBody, registerValues, runOn  # noqa: E402

HEADER = struct.Struct(">HHHB")


def modbusExchange(gid, seq, units=247):
    """
    The request of client C{gid}'s C{seq}th round trip, and its answer; the
    clients' unit ids are 1..C{units}.
    """
    tid = (seq + gid * 4099) & 0xFFFF
    unit = 1 + gid % units
    count = 1 + seq % 8
    address = (gid * 8 + seq) & 0xFFFF
    request = HEADER.pack(tid, 0, 6, unit) + struct.pack(">BHH", 3, address, count)
    response = HEADER.pack(tid, 0, 3 + 2 * count, unit) + struct.pack(
        f">BB{count}H", 3, 2 * count, *registerValues(unit, address, count)
    )
    return request, response


def sameReadExchange(count, gid, seq):
    """
    C{--same-read}: every client polls the same C{count} registers of unit 1
    from address 0 (what a cache serves); only the transaction id differs.
    """
    tid = (seq + gid * 4099) & 0xFFFF
    request = HEADER.pack(tid, 0, 6, 1) + struct.pack(">BHH", 3, 0, count)
    response = HEADER.pack(tid, 0, 3 + 2 * count, 1) + struct.pack(
        f">BB{count}H", 3, 2 * count, *registerValues(1, 0, count)
    )
    return request, response


def echoExchange(gid, seq, pad=b"x" * 12):
    line = b"c%d s%d %s\n" % (gid, seq, pad)
    return line, line


def httpExchange(gid, seq):
    path = b"/c%d/s%d" % (gid, seq)
    request = b"GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % path
    return request, HTTPAnswer(httpBody(path))


class HTTPAnswer:
    """
    The expected answer to one GET: a 200 whose body is C{body}. L{check}
    says whether C{data} is it (C{True}), a beginning of it (L{None}), or
    wrong (C{False}).
    """

    def __init__(self, body):
        self.body = body

    def check(self, data):
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None if len(data) < 4096 else False
        head = data[:end].split(b"\r\n")
        if head[0] not in (b"HTTP/1.1 200 OK", b"HTTP/1.1 200"):
            return False
        length = None
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length != len(self.body):
            return False
        got = len(data) - end - 4
        if got < length:
            return None if self.body.startswith(data[end + 4 :]) else False
        return got == length and data.endswith(self.body)

    def hex(self):
        return self.body.hex()


EXCHANGES = {"modbus": modbusExchange, "echo": echoExchange, "http": httpExchange}


class Run:
    """
    State shared by the clients of one process.
    """

    def __init__(self, options):
        self.options = options
        self.exchange = EXCHANGES[options.protocol]
        if options.same_read:
            self.exchange = lambda gid, seq: sameReadExchange(options.same_read, gid, seq)
        if options.protocol == "modbus" and options.units != 247:
            units = options.units
            self.exchange = lambda gid, seq: modbusExchange(gid, seq, units)
        self.clients = []
        self.latencies = array("d")
        self.completed = 0
        self.total = 0
        self.mismatches = 0
        self.errors = 0
        self.firstMismatch = None
        self.measureFrom = float("inf")
        self.measureUntil = float("inf")
        self.stopping = False
        self.idleTarget = None  # idle mode: round trips per client
        self.done = None

    def checkDone(self):
        if self.done is not None and not self.done.done():
            if all(not c.outstanding for c in self.clients):
                self.done.set_result(None)


class Client(asyncio.Protocol):
    def __init__(self, run, gid):
        self.run = run
        self.gid = gid
        self.seq = 0
        self.inWindow = 0
        self.expected = None
        self.buffer = b""
        self.sent = 0.0
        self.transport = None
        self.outstanding = False
        self.broken = False
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def sendNext(self):
        run = self.run
        if run.stopping or self.broken or (
            run.idleTarget is not None and self.seq >= run.idleTarget
        ):
            self.outstanding = False
            run.checkDone()
            return
        self.seq += 1
        request, self.expected = run.exchange(self.gid, self.seq)
        self.buffer = b""
        self.outstanding = True
        self.sent = time.perf_counter()
        self.transport.write(request)

    def fail(self, why, got):
        run = self.run
        run.mismatches += 1
        if run.firstMismatch is None:
            run.firstMismatch = {
                "client": self.gid,
                "seq": self.seq,
                "why": why,
                "expected": (self.expected or b"").hex(),
                "got": got.hex(),
            }
        self.broken = True
        self.outstanding = False
        self.transport.abort()
        run.checkDone()

    def data_received(self, data):
        expected = self.expected
        if expected is None:
            self.fail("bytes when no request was outstanding", data)
            return
        if self.buffer:
            data = self.buffer + data
        if isinstance(expected, HTTPAnswer):
            verdict = expected.check(data)
            if verdict is None:
                self.buffer = data
                return
            if not verdict:
                self.fail("wrong answer", data)
                return
            self.answered()
            return
        size = len(data)
        want = len(expected)
        if size < want:
            if expected[:size] != data:
                self.fail("wrong answer", data)
            else:
                self.buffer = data
            return
        if size > want or data != expected:
            self.fail("wrong answer" if size == want else "wrong length", data)
            return
        self.answered()

    def answered(self):
        now = time.perf_counter()
        run = self.run
        self.expected = None
        run.total += 1
        if run.measureFrom <= now < run.measureUntil:
            run.completed += 1
            self.inWindow += 1
            run.latencies.append(now - self.sent)
        self.sendNext()

    def connection_lost(self, exc):
        if not self.broken and (self.outstanding or not self.run.stopping):
            self.run.errors += 1
            self.lost = True
        self.broken = True
        self.outstanding = False
        self.run.checkDone()


async def connectAll(run, options):
    loop = asyncio.get_running_loop()
    failed = 0
    ids = list(range(options.first_id, options.first_id + options.clients))
    for start in range(0, len(ids), options.connect_batch):
        batch = ids[start : start + options.connect_batch]
        attempts = [
            asyncio.wait_for(
                loop.create_connection(
                    lambda gid=gid: Client(run, gid), options.host, options.port
                ),
                options.connect_timeout,
            )
            for gid in batch
        ]
        for result in await asyncio.gather(*attempts, return_exceptions=True):
            if isinstance(result, BaseException):
                failed += 1
            else:
                run.clients.append(result[1])
    return failed


async def readLine():
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def results(run, options, failed, wall):
    counts = sorted(c.inWindow for c in run.clients) or [0]
    lost = sum(1 for c in run.clients if c.outstanding)
    if options.latency_file:
        with open(options.latency_file, "wb") as f:
            run.latencies.tofile(f)
    return {
        "clients": options.clients,
        "connected": len(run.clients),
        "connect_failed": failed,
        "completed": run.completed,
        "total": run.total,
        "window": wall,
        "mismatches": run.mismatches,
        "errors": run.errors + lost,
        "unanswered": lost,
        "first_mismatch": run.firstMismatch,
        "per_client_min": counts[0],
        "per_client_max": counts[-1],
        "starved": sum(1 for c in counts if c == 0),
    }


async def main(options):
    run = Run(options)
    failed = await connectAll(run, options)
    loop = asyncio.get_running_loop()
    if options.standalone:
        start = time.time() + 0.1
        go = [start, start + options.warmup, start + options.warmup + options.duration]
    else:
        print(json.dumps({"ready": len(run.clients), "failed": failed}), flush=True)
        line = (await readLine()).split()
        if not line or line[0] != "GO":
            return 2
        go = [float(x) for x in line[1:4]]
    # Wall-clock instants -> this process's perf_counter.
    offset = time.perf_counter() - time.time()
    start, run.measureFrom, run.measureUntil = (t + offset for t in go)
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    run.done = loop.create_future()
    if options.idle:
        run.idleTarget = options.idle_requests
        run.measureFrom = 0.0
        for client in run.clients:
            client.sendNext()
        run.checkDone()
        try:
            await asyncio.wait_for(asyncio.shield(run.done), options.drain_timeout)
        except asyncio.TimeoutError:
            pass
        print(json.dumps({"idle": len(run.clients)}), flush=True)
        await readLine()
        run.stopping = True
        result = results(run, options, failed, 0.0)
        result["completed"] = run.total
    else:
        for client in run.clients:
            client.sendNext()
        await asyncio.sleep(max(0.0, run.measureUntil - time.perf_counter()))
        run.stopping = True
        run.checkDone()
        try:
            await asyncio.wait_for(asyncio.shield(run.done), options.drain_timeout)
        except asyncio.TimeoutError:
            pass
        result = results(run, options, failed, go[2] - go[1])
    for client in run.clients:
        if client.transport is not None:
            client.transport.close()
    if options.standalone:
        lat = sorted(run.latencies)
        pct = lambda q: 1e6 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0
        result["round_trips_per_s"] = result["completed"] / max(result["window"], 1e-9)
        result["p50_us"] = pct(0.50)
        result["p99_us"] = pct(0.99)
    print(json.dumps(result), flush=True)
    return 0 if not (result["mismatches"] or result["errors"]) else 1


def parseArgs(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", "-p", choices=sorted(EXCHANGES), default="modbus")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", "-c", type=int, default=1)
    parser.add_argument(
        "--first-id",
        type=int,
        default=0,
        help="id of this process's first client (distinct across processes)",
    )
    parser.add_argument("--latency-file")
    parser.add_argument("--idle", action="store_true")
    parser.add_argument(
        "--units",
        type=int,
        default=247,
        help="modbus: the clients' unit ids are 1..UNITS (1 + client id %% UNITS)",
    )
    parser.add_argument("--idle-requests", type=int, default=1)
    parser.add_argument("--connect-batch", type=int, default=100)
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--standalone", action="store_true")
    parser.add_argument(
        "--same-read",
        type=int,
        default=0,
        metavar="N",
        help="modbus: every client reads the same N registers (unit 1, from 0)",
    )
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    addLoopOption(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parseArgs()
    sys.exit(runOn(options.loop, main(options)))
