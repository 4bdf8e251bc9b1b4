# -*- test-case-name: tests.test_work -*-
"""
Python work per Modbus round trip, in memory: what tcpmux's own code costs,
without the network, the reactor's system calls or the machine's noise.

    python benchmarks/work.py                       # this checkout and the yardsticks
    python benchmarks/work.py --checkout base=DIR   # and another checkout, same process
    python benchmarks/work.py --functions           # bytecodes per function and step

The real multiplexer (C{tcpmux.multiplexer.Multiplexer}, a
C{TargetClientFactory}, the C{modbus} protocol, a 60 s timeout, busy polling
kept on, as it stays at 10 clients on the rig) serves 10 clients over in-memory transports
(L{twisted.internet.testing.StringTransport}) on a
L{twisted.internet.task.Clock}: each step, the target's answer is fed to the
target connection's framer, the calls then due run (one reactor turn: busy
polling's), and the client that was answered sends its next request. The
two yardsticks of C{bench.py} (C{benchmarks/floor}: C{twisted-floor}, the
barest Twisted proxy, and C{twisted-deferred}, the same on the design's
skeleton of a C{DeferredLock} turn and a C{Deferred} answer) run the same
steps.

It reports, per round trip:

  - bytecodes and Python calls (C{sys.settrace}, counting every opcode):
    the same on every run of the same code, so it resolves a change of a
    few percent that the throughput of C{bench.py} cannot;
  - the bytecodes of each step: answer in to the next request out (the
    critical path of every round trip), request out to the answer written
    to its client, the rest of that answer's work, the reactor turn, and a
    client's request in to queued;
  - microseconds (medians of batches, interleaved between the systems run
    in the same process, so that the machine's drift hits them alike).

Transports are in memory: tcpmux writes with C{transport.write}, since
C{tcpmux.writing.writeNow} sends to the socket only on a real TCP
connection, and the yardsticks' socket is a list. The reactor's own work per
event (C{epoll}, C{log.callWithLogger}, the system calls) is the same for
every proxy and is not here: C{bench.py} measures it all.
"""

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

HERE = Path(__file__).resolve().parent
CLIENTS = 10
# A Modbus TCP read of two holding registers (transaction id 0x7a01: not
# one tcpmux gives out first on the target connection).
REQUEST = bytes.fromhex("7a0100000006010300000002")
STEPS = ("critical path", "to the client", "answer's rest", "reactor turn", "request in")


class MemoryTransport(StringTransport):
    """
    A transport whose writes are kept whole, in a list; it is also its own
    socket, for the yardsticks, which send to the socket when nothing is
    buffered (as tcpmux does on a real connection).
    """

    dataBuffer = b""
    _tempDataBuffer = ()

    def __init__(self, *args, **kwargs):
        StringTransport.__init__(self, *args, **kwargs)
        self.socket = self
        self.written = []
        self.onWrite = None

    def write(self, data):
        self.written.append(data)
        if self.onWrite is not None:
            self.onWrite(self)

    def send(self, data):
        self.write(data)
        return len(data)

    def setTcpNoDelay(self, enabled):
        pass


def answerTo(request):
    """
    The target's answer to a read of two registers: the request's
    transaction id, whatever tcpmux made it.
    """
    return request[:4] + b"\x00\x07\x01\x03\x04\x00\x01\x00\x02"


def reactorTurn(clock):
    """
    Run the calls due now, once: one reactor turn (a call scheduled by one
    of them, busy polling's next, waits for the next turn).
    """
    now = clock.seconds()
    due = [call for call in clock.calls if call.getTime() <= now]
    for call in due:
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)


class Rig:
    """
    One proxy, connected to one in-memory target and C{CLIENTS} in-memory
    clients, each of which has one request on its way.
    """

    def __init__(self, clock, targetFramer, clientFramers):
        self.clock = clock
        self.target = targetFramer
        self.clients = clientFramers
        self.step = 0
        for framer in clientFramers:
            framer.dataReceived(REQUEST)

    def roundTrip(self):
        """
        The target answers the request in flight; the client answered sends
        its next request. (Clients are served in turn, first come first
        served: the answer of this step is the oldest client's.)
        """
        sent = self.target.transport.written.pop()
        self.target.dataReceived(answerTo(sent))
        reactorTurn(self.clock)
        client = self.clients[self.step % len(self.clients)]
        self.step += 1
        answer = client.transport.written.pop()
        if answer[:2] != REQUEST[:2]:
            raise AssertionError(f"a client got {answer.hex()}")
        client.dataReceived(REQUEST)


def loadTcpmux(path=None):
    """
    The tcpmux of the checkout at C{path}, imported afresh (rigs built from
    it keep its modules, whatever is imported after); by default this
    checkout's, as imported already.
    """
    if path is not None:
        for name in [name for name in sys.modules if name.split(".")[0] == "tcpmux"]:
            del sys.modules[name]
    root = str(Path(path).resolve() if path else HERE.parent)
    sys.path.insert(0, root)
    try:
        from tcpmux.multiplexer import Multiplexer
        from tcpmux.protocols import get
        from tcpmux.target.factory import TargetClientFactory

        # (Imported on first use: now, from this checkout.)
        application = get("modbus")
    finally:
        sys.path.remove(root)

    def build():
        clock = Clock()
        target = TargetClientFactory(
            None, application, "target", timeout=60.0, clock=clock
        )
        multiplexer = Multiplexer(
            application, target, timeout=60.0, clock=clock, busyPoll=100e-6
        )
        # Polling stays on, as at 10 clients on the rig: in memory no turn is
        # idle, so it would judge that polling saves no sleep, and rest. Its
        # timer is the clock, so that every run counts the same work.
        multiplexer.busyPoll.timer = clock.seconds
        multiplexer.busyPoll._trusted = float("inf")
        targetFramer = target.buildProtocol(None)
        targetFramer.makeConnection(MemoryTransport())
        clients = []
        for port in range(40000, 40000 + CLIENTS):
            address = IPv4Address("TCP", "127.0.0.1", port)
            framer = multiplexer.buildProtocol(address)
            framer.makeConnection(MemoryTransport(peerAddress=address))
            clients.append(framer)
        return Rig(clock, targetFramer, clients)

    return build


def loadYardstick(deferred):
    """
    C{twisted-floor}, or with C{deferred} C{twisted-deferred}, on a clock:
    each from a module of its own, whose C{reactor} is its clock.
    """
    path = HERE / "floor" / "twisted" / "plugins" / "tcpmux_floor_proxy.py"
    spec = importlib.util.spec_from_file_location(f"yardstick{int(deferred)}", path)
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)

    def build():
        clock = floor.reactor = Clock()
        mux = floor.DeferredMux() if deferred else floor.Mux()
        targets = Factory.forProtocol(floor.Target)
        clients = Factory.forProtocol(floor.Client)
        targets.mux = clients.mux = mux
        targetFramer = targets.buildProtocol(None)
        targetFramer.makeConnection(MemoryTransport())
        framers = []
        for _ in range(CLIENTS):
            framer = clients.buildProtocol(None)
            framer.makeConnection(MemoryTransport())
            framers.append(framer)
        return Rig(clock, targetFramer, framers)

    return build


def countWork(rig, roundTrips):
    """
    Bytecodes and Python calls per round trip, in all and by step (and, by
    step, by function), not counting this module's own.
    """
    here = __file__
    step = [STEPS[0]]
    byFunction = {}
    calls = [0]

    def tracer(frame, event, arg):
        if frame.f_code.co_filename == here:
            return None
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            key = (step[0], f"{Path(code.co_filename).name}:{code.co_name}")
            byFunction[key] = byFunction.get(key, 0) + 1
        elif event == "call":
            calls[0] += 1
        return tracer

    def written(transport):
        # The first write is the next request, the second the answer.
        if step[0] == STEPS[0]:
            step[0] = STEPS[1]
        elif step[0] == STEPS[1]:
            step[0] = STEPS[2]

    target = rig.target.transport
    target.onWrite = written
    for framer in rig.clients:
        framer.transport.onWrite = written
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        for _ in range(roundTrips):
            step[0] = STEPS[0]
            sent = target.written.pop()
            rig.target.dataReceived(answerTo(sent))
            step[0] = STEPS[3]
            reactorTurn(rig.clock)
            client = rig.clients[rig.step % len(rig.clients)]
            rig.step += 1
            client.transport.written.pop()
            step[0] = STEPS[4]
            client.dataReceived(REQUEST)
    finally:
        sys.settrace(previous)
        target.onWrite = None
        for framer in rig.clients:
            framer.transport.onWrite = None
    return byFunction, calls[0]


def timeBatch(rig, roundTrips):
    started = time.perf_counter()
    for _ in range(roundTrips):
        rig.roundTrip()
    return (time.perf_counter() - started) / roundTrips * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also measure the tcpmux of another checkout, as NAME (repeatable)",
    )
    parser.add_argument("--no-floor", action="store_true", help="leave the yardsticks out")
    parser.add_argument(
        "--functions", action="store_true", help="bytecodes per function, step by step"
    )
    parser.add_argument("--round-trips", type=int, default=2000, help="counted (default 2000)")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per system")
    parser.add_argument("--batch", type=int, default=5000, help="round trips per timed batch")
    options = parser.parse_args()

    builders = {"tcpmux": loadTcpmux()}
    for spec in options.checkout:
        name, _, path = spec.partition("=")
        if not name or not Path(path, "tcpmux").is_dir():
            parser.error(f"--checkout wants NAME=DIR, DIR a tcpmux checkout: {spec!r}")
        builders[name] = loadTcpmux(path)
    if not options.no_floor:
        builders["twisted-deferred"] = loadYardstick(True)
        builders["twisted-floor"] = loadYardstick(False)

    counted = {}
    for name, build in builders.items():
        rig = build()
        for _ in range(100):
            rig.roundTrip()
        counted[name] = countWork(rig, options.round_trips)

    # Timed batches, interleaved: the machine's drift falls on every system.
    rigs = {name: build() for name, build in builders.items()}
    times = {name: [] for name in rigs}
    for rig in rigs.values():
        timeBatch(rig, options.batch)
    for _ in range(options.batches):
        for name, rig in rigs.items():
            times[name].append(timeBatch(rig, options.batch))

    n = options.round_trips
    reference = statistics.median(times["tcpmux"])
    print(f"Python work per Modbus round trip, {CLIENTS} clients, in memory")
    print(
        f"{'system':18} {'bytecodes':>9} {'calls':>6}  "
        + " ".join(f"{step:>14}" for step in STEPS)
        + f" {'us (median)':>12} {'/ tcpmux':>8}"
    )
    for name, (byFunction, calls) in counted.items():
        perStep = {step: 0 for step in STEPS}
        for (step, _), count in byFunction.items():
            perStep[step] += count
        median = statistics.median(times[name])
        print(
            f"{name:18} {sum(perStep.values()) / n:9.0f} {calls / n:6.1f}  "
            + " ".join(f"{perStep[step] / n:14.0f}" for step in STEPS)
            + f" {median:12.2f} {median / reference:8.2f}"
        )
    print(f"(bytecodes by step; us: medians of {options.batches} batches of {options.batch})")
    if options.functions:
        for name, (byFunction, _) in counted.items():
            print(f"\n{name}")
            for step in STEPS:
                functions = sorted(
                    (
                        (count, function)
                        for (s, function), count in byFunction.items()
                        if s == step
                    ),
                    reverse=True,
                )
                shown = ", ".join(
                    f"{function} {count / n:.0f}"
                    for count, function in functions
                    if count >= n
                )
                print(f"  {step}: {shown}")


if __name__ == "__main__":
    main()
