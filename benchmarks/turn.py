# -*- test-case-name: tests.test_busypoll -*-
"""
What one polled reactor turn costs, with nothing else to do: kept turning
by a C{callLater(0)} set again at every turn, and by
L{tcpmux.client.busypoll.NextTurn}, each on a fresh epoll reactor in this
process (one after the other, the order alternating over the rounds).

    python benchmarks/turn.py [--turns N] [--rounds N]
"""

import argparse
import statistics
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
    return (time.perf_counter() - started) / turns * 1e6


WAYS = {
    "callLater(0)": lambda reactor: partial(reactor.callLater, 0),
    "NextTurn": lambda reactor: NextTurn.of(reactor).call,
}


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
    print(f"us per polled turn with nothing to do (median of {options.rounds})")
    for name, seen in times.items():
        median = statistics.median(seen)
        print(f"  {name:<14} {median:6.2f} us  {median / base:5.2f}x")


if __name__ == "__main__":
    main()
