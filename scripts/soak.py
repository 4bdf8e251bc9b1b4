#!/usr/bin/env python3
"""
Soak test: N Modbus clients for M minutes through a real `twistd tcpmux`,
against the one-connection example device, which is killed and restarted
on the same port every K seconds.

    python scripts/soak.py --clients 50 --minutes 10 --restart-every 30

Every client writes a register of its own, reads it back, and reads a block
whose size is its own, back to back (with --think between requests). Every
answer is checked: transaction id, unit id, function code, byte count, and
that a read value is 0 or one this client wrote; anything else is a
mismatch (an answer to the wrong request), which must stay 0.

Prints, every --interval seconds: requests answered, errors by kind
(Modbus exception codes, disconnects, client-side timeouts), mismatches,
and tcpmux's RSS and open file descriptors; then a summary.
Needs pymodbus for the example device.
"""

import argparse
import os
import socket
import struct
import subprocess
import sys
import time
from collections import Counter

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall, deferLater

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def childEnv():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def waitForPort(port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def procStatus(pid):
    """
    (RSS in MiB, open fds) of process C{pid}.
    """
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Device:
    def __init__(self, port, log):
        self.port = port
        self.log = log
        self.process = None
        self.restarts = 0

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "examples", "modbus_device.py"),
             "--port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=childEnv(),
        )

    def restart(self):
        self.process.kill()
        self.process.wait()
        self.restarts += 1
        self.start()

    def stop(self):
        self.process.kill()
        self.process.wait()


class Stats:
    def __init__(self):
        self.ok = 0
        self.errors = Counter()
        self.mismatches = 0
        self.mismatchSamples = []

    def mismatch(self, what):
        self.mismatches += 1
        if len(self.mismatchSamples) < 10:
            self.mismatchSamples.append(what)


class SoakClient(Protocol):
    """
    One client, requests back to back; reconnects when disconnected.
    """

    def __init__(self, index, stats, options):
        self.index = index
        self.stats = stats
        self.options = options
        self.buffer = b""
        self.tid = 0
        self.expected = None
        self.written = {0}
        self.value = 0
        self.step = 0
        self.timer = None
        self.done = Deferred()

    def connectionMade(self):
        self.send()

    def send(self):
        if not self.transport.connected or stopping[0]:
            return
        self.tid = (self.tid + 1) & 0xFFFF
        unit = 1 + self.index % 200
        address = self.index % 900
        kind = self.step % 3
        self.step += 1
        if kind == 0:
            self.value = (self.value + 1) & 0xFFFF or 1
            self.written.add(self.value)
            pdu = struct.pack(">BHH", 6, address, self.value)
        elif kind == 1:
            pdu = struct.pack(">BHH", 3, address, 1)
        else:
            count = 1 + self.index % 50
            pdu = struct.pack(">BHH", 3, 900 + (self.index % 50), count)
        self.expected = (self.tid, unit, pdu)
        self.transport.write(struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, unit) + pdu)
        self.timer = reactor.callLater(self.options.client_timeout, self.clientTimeout)

    def clientTimeout(self):
        self.timer = None
        self.stats.errors["client timeout"] += 1
        self.transport.abortConnection()

    def dataReceived(self, data):
        self.buffer += data
        while len(self.buffer) >= 6:
            end = 6 + struct.unpack(">H", self.buffer[4:6])[0]
            if len(self.buffer) < end:
                return
            adu, self.buffer = self.buffer[:end], self.buffer[end:]
            self.check(adu)

    def check(self, adu):
        if self.expected is None:
            self.stats.mismatch(f"client {self.index}: unsolicited {adu.hex()}")
            return
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        tid, unit, pdu = self.expected
        self.expected = None
        gotTid, proto, length, gotUnit = struct.unpack(">HHHB", adu[:7])
        body = adu[7:]
        if gotTid != tid or gotUnit != unit or proto != 0:
            self.stats.mismatch(f"client {self.index}: sent {tid}/{unit}, got {adu.hex()}")
        elif body[0] == pdu[0] | 0x80:
            self.stats.errors[f"exception 0x{body[1]:02X}"] += 1
        elif body[0] != pdu[0]:
            self.stats.mismatch(f"client {self.index}: fc {pdu[0]}, got {adu.hex()}")
        elif pdu[0] == 6:
            if body != pdu:
                self.stats.mismatch(f"client {self.index}: wrote {pdu.hex()}, got {adu.hex()}")
            else:
                self.stats.ok += 1
        else:
            count = struct.unpack(">H", pdu[3:5])[0]
            if body[1] != 2 * count or len(body) != 2 + 2 * count:
                self.stats.mismatch(f"client {self.index}: read {count}, got {adu.hex()}")
            elif count == 1 and pdu[1:3] == struct.pack(">H", self.index % 900) and (
                struct.unpack(">H", body[2:4])[0] not in self.written
            ):
                self.stats.mismatch(f"client {self.index}: value not ours: {adu.hex()}")
            else:
                self.stats.ok += 1
        if self.options.think:
            reactor.callLater(self.options.think, self.send)
        else:
            self.send()

    def connectionLost(self, reason):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if self.expected is not None and not stopping[0]:
            self.stats.errors["disconnected"] += 1
        self.done.callback(None)


stopping = [False]


async def runClient(index, port, stats, options):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    while not stopping[0]:
        try:
            client = await endpoint.connect(
                Factory.forProtocol(lambda: SoakClient(index, stats, options))
            )
        except Exception:
            stats.errors["connect failed"] += 1
            await deferLater(reactor, 0.1)
            continue
        await client.done
        if not stopping[0]:
            await deferLater(reactor, 0.05)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--restart-every", type=float, default=30,
                        help="seconds between device restarts")
    parser.add_argument("--down", type=float, default=1.0,
                        help="seconds the device stays down at each restart")
    parser.add_argument("--timeout", default="2", help="tcpmux --timeout")
    parser.add_argument("--retry-delay", default="500ms", help="tcpmux --retry-delay")
    parser.add_argument("--think", type=float, default=0.005,
                        help="seconds a client waits between requests")
    parser.add_argument("--client-timeout", type=float, default=10,
                        help="a client gives up on an answer after this long")
    parser.add_argument("--interval", type=float, default=30,
                        help="seconds between report lines")
    options = parser.parse_args(argv)

    devicePort, muxPort = freePort(), freePort()
    log = open(os.devnull, "w")
    device = Device(devicePort, log)
    device.start()
    waitForPort(devicePort)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    mux = subprocess.Popen(
        [twistd, "--nodaemon", "--pidfile=", "--logfile=-", "tcpmux",
         "--protocol", "modbus", "--target", f"127.0.0.1:{devicePort}",
         "--listen", f"tcp:{muxPort}:interface=127.0.0.1",
         "--timeout", options.timeout, "--retry-delay", options.retry_delay,
         "--max-clients", str(max(1024, options.clients + 10))],
        stdout=log, stderr=subprocess.STDOUT, env=childEnv(), cwd=ROOT,
    )
    waitForPort(muxPort)
    time.sleep(0.5)
    stats = Stats()
    started = time.monotonic()
    rss0, fds0 = procStatus(mux.pid)
    samples = [(0.0, rss0, fds0)]
    print(f"soak: {options.clients} clients, {options.minutes} min, device "
          f"restarted every {options.restart_every}s (down {options.down}s), "
          f"tcpmux --timeout {options.timeout} --retry-delay {options.retry_delay}",
          flush=True)
    print(f"{'t/s':>6} {'answered':>9} {'rps':>6} {'mismatch':>8} "
          f"{'rss/MiB':>8} {'fds':>5}  errors", flush=True)
    last = [0, started]

    def report():
        now = time.monotonic()
        rss, fds = procStatus(mux.pid)
        samples.append((now - started, rss, fds))
        rate = (stats.ok - last[0]) / max(now - last[1], 1e-9)
        last[:] = [stats.ok, now]
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(stats.errors.items()))
        print(f"{now - started:6.0f} {stats.ok:9d} {rate:6.0f} {stats.mismatches:8d} "
              f"{rss:8.1f} {fds:5d}  {errors or '-'}", flush=True)

    def restart():
        device.process.kill()
        device.process.wait()
        device.restarts += 1
        reactor.callLater(options.down, device.start)

    reporter = LoopingCall(report)
    restarter = LoopingCall(restart)

    def begin():
        for index in range(options.clients):
            Deferred.fromCoroutine(runClient(index, muxPort, stats, options))
        reporter.start(options.interval, now=False)
        restarter.start(options.restart_every, now=False)
        reactor.callLater(options.minutes * 60, finish)

    def finish():
        stopping[0] = True
        reporter.stop()
        restarter.stop()
        report()
        reactor.stop()

    reactor.callWhenRunning(begin)
    reactor.run()
    mux.terminate()
    code = mux.wait(timeout=30)
    device.stop()
    elapsed = time.monotonic() - started
    total = stats.ok + sum(stats.errors.values())
    rss = [s[1] for s in samples]
    fds = [s[2] for s in samples]
    print()
    print(f"requests: {total} in {elapsed:.0f}s ({total / elapsed:.0f}/s), "
          f"answered {stats.ok}, errors {sum(stats.errors.values())}, "
          f"mismatches {stats.mismatches}")
    print("errors by kind: " + (", ".join(
        f"{k}: {v}" for k, v in sorted(stats.errors.items())) or "none"))
    print(f"device restarts: {device.restarts}")
    print(f"tcpmux RSS MiB: start {rss[0]:.1f}, min {min(rss):.1f}, "
          f"max {max(rss):.1f}, end {rss[-1]:.1f}")
    print(f"tcpmux open fds: start {fds[0]}, min {min(fds)}, max {max(fds)}, "
          f"end {fds[-1]}")
    print(f"tcpmux exit status after SIGTERM: {code}")
    for sample in stats.mismatchSamples:
        print("mismatch:", sample)
    return 1 if stats.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
