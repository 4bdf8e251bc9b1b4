# -*- test-case-name: tests.test_work -*-
"""
What one polled reactor turn costs, with nothing else to do: kept turning
by a C{callLater(0)} set again at every turn, and by
L{tcpmux.client.busypoll.NextTurn}, each on a fresh epoll reactor in this
process (one after the other, the order alternating over the rounds); and
the bytecodes and Python calls of such a turn, counted.

    python benchmarks/turn.py [--turns N] [--rounds N]
"""

import argparse
import statistics
import sys
import time
from functools import partial

from twisted.internet.epollreactor import EPollReactor

from tcpmux.client.busypoll import NextTurn


def perTurn(turns, way):
    """
    Microseconds per turn of a fresh reactor kept turning C{turns} times by
    C{way(reactor)(f)}, which asks for C{f} at its next turn.
    """
    reactor = EPollReactor()
    keepTurning = way(reactor)
    left = [turns]

    def poll():
        left[0] -= 1
        if left[0]:
            keepTurning(poll)
        else:
            reactor.stop()

    reactor.callWhenRunning(keepTurning, poll)
    started = time.perf_counter()
    reactor.run(installSignalHandlers=False)
    elapsed = time.perf_counter() - started
    close(reactor)
    return elapsed / turns * 1e6


def close(reactor):
    """
    Close the descriptors of a reactor that is done with: its epoll and
    its waker's.
    """
    reactor._poller.close()
    reactor.waker.connectionLost(None)


WAYS = {
    "callLater(0)": lambda reactor: partial(reactor.callLater, 0),
    "NextTurn": lambda reactor: NextTurn.of(reactor).call,
}


def countTurn(way, turns=100):
    """
    Bytecodes and Python calls per polled turn, C{sys.settrace} counting
    every opcode: the turn's own work (its timed calls run, its C{timeout()}
    asked) and the poll's asking for the next, on a reactor not running.
    """
    reactor = EPollReactor()
    keepTurning = way(reactor)
    counts = {"opcode": 0, "call": 0}

    def poll():
        keepTurning(poll)

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event in counts:
            counts[event] += 1
        return tracer

    keepTurning(poll)
    sys.settrace(tracer)
    try:
        for _ in range(turns):
            reactor.runUntilCurrent()
            reactor.timeout()
    finally:
        sys.settrace(None)
    close(reactor)
    return counts["opcode"] / turns, counts["call"] / turns


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--turns", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    times = {name: [] for name in WAYS}
    for round_ in range(options.rounds):
        names = list(WAYS) if round_ % 2 == 0 else list(reversed(WAYS))
        for name in names:
            times[name].append(perTurn(options.turns, WAYS[name]))
    base = statistics.median(times["callLater(0)"])
    print(f"per polled turn with nothing to do (us: median of {options.rounds})")
    for name, seen in times.items():
        median = statistics.median(seen)
        bytecodes, calls = countTurn(WAYS[name])
        print(
            f"  {name:<14} {median:6.2f} us  {median / base:5.2f}x"
            f"  {bytecodes:5.0f} bytecodes  {calls:4.1f} calls"
        )


if __name__ == "__main__":
    main()
