# -*- test-case-name: tests.test_work -*-
"""
C{benchmarks/work.py}, the count of the Python work of a round trip, and
C{benchmarks/turn.py}, what a polled reactor turn costs: what the README's
figures rest on.
"""

import importlib.util
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def loadBenchmark(name):
    spec = importlib.util.spec_from_file_location(
        f"tcpmux_benchmark_{name}", BENCHMARKS / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loadWork():
    return loadBenchmark("work")


class WorkCountTests(SynchronousTestCase):
    def setUp(self):
        self.work = loadWork()

    def count(self, build, roundTrips=50):
        rig = build()
        for _ in range(20):
            rig.roundTrip()
        byFunction, calls = self.work.countWork(rig, roundTrips)
        perStep = {step: 0 for step in self.work.STEPS}
        for (step, _), count in byFunction.items():
            perStep[step] += count
        return perStep, calls

    def test_sameOnEveryRun(self):
        """
        The same code counts the same bytecodes and calls, step by step, on
        every run of the same steps; on a rig that ran longer, within 1%
        (busy polling judges a window of its turns every 1,024 of them).
        """
        build = self.work.loadTcpmux()
        first = self.count(build)
        self.assertEqual(first, self.count(build))
        rig = build()
        for _ in range(1000):
            rig.roundTrip()
        byFunction, calls = self.work.countWork(rig, 50)
        later = sum(byFunction.values())
        fresh = sum(first[0].values())
        self.assertLess(abs(later - fresh), fresh / 100)
        self.assertLess(abs(calls - first[1]), first[1] / 100)

    def test_everyStepCounted(self):
        """
        Each step of a tcpmux round trip does some work, and tcpmux does
        more than the design's skeleton, which does more than the barest
        proxy.
        """
        perStep, _ = self.count(self.work.loadTcpmux())
        for step, count in perStep.items():
            self.assertGreater(count, 0, step)
        totals = [
            sum(self.count(build)[0].values())
            for build in (
                self.work.loadTcpmux(),
                self.work.loadYardstick(True),
                self.work.loadYardstick(False),
            )
        ]
        self.assertEqual(totals, sorted(totals, reverse=True))

    def test_answersReachTheirClients(self):
        """
        The rig hands every answer to the client that asked: the client's
        own transaction id comes back, whatever id tcpmux wrote to the
        target.
        """
        rig = self.work.loadTcpmux()()
        sent = rig.target.transport.written[-1]
        # tcpmux gave the request an id of its own on the target connection.
        self.assertNotEqual(sent[:2], self.work.REQUEST[:2])
        for _ in range(3 * self.work.CLIENTS):
            rig.roundTrip()
        self.assertEqual(rig.step, 3 * self.work.CLIENTS)


class TurnTests(SynchronousTestCase):
    """
    C{benchmarks/turn.py}: both ways of keeping a reactor turning run the
    turns asked for, and are counted alike on every run.
    """

    def setUp(self):
        self.turn = loadBenchmark("turn")

    def test_bothWaysTurn(self):
        """
        Each way keeps a fresh reactor turning until the last poll stops
        it, and the figure is per turn.
        """
        for way in self.turn.WAYS.values():
            self.assertGreater(self.turn.perTurn(100, way), 0)

    def test_countedTheSameEveryRun(self):
        """
        The count of a turn is the same on every run, and a turn kept by
        L{NextTurn} does less Python work than one kept by a timed call.
        """
        timed = self.turn.countTurn(self.turn.WAYS["callLater(0)"])
        nextTurn = self.turn.countTurn(self.turn.WAYS["NextTurn"])
        self.assertEqual(self.turn.countTurn(self.turn.WAYS["NextTurn"]), nextTurn)
        self.assertLess(nextTurn[0], timed[0])
        self.assertLess(nextTurn[1], timed[1])
