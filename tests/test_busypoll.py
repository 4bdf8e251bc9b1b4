"""
Tests for L{tcpmux.client.busypoll}: polling for a fast target's answer
instead of sleeping, on a L{Clock} with a timer the test moves, and end to
end with pymodbus peers; L{NextTurn} on the real reactor.
"""

import asyncio

from twisted.internet import reactor
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux.client.busypoll import (
    MIN_SAVED,
    PROBE_EVERY,
    REST,
    TRIAL,
    TRUST,
    WINDOW,
    BusyPoll,
    NextTurn,
)
from tests.faults import FaultTarget, answer, ask, connect
from tests.modbus import clientSession, readRequest, readResponse
from tests.support import buildMultiplexer, runExample, startMultiplexer, until


class Timer:
    """
    Real time as the test says it is.
    """

    now = 100.0

    def __call__(self):
        return self.now


class BusyPollTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.timer = Timer()
        self.poll = BusyPoll(self.clock, 0.0001, self.timer)

    def turn(self, seconds=0.0):
        """
        One reactor turn, C{seconds} of real time after the last.
        """
        self.timer.now += seconds
        # (Clock.advance would also run what these calls schedule for now,
        # forever, since its time stands still: run only these.)
        due = list(self.clock.getDelayedCalls())
        for call in due:
            self.clock.calls.remove(call)
            call.called = True
            call.func(*call.args, **call.kw)
        return len(due)

    def test_pollsWhileDue(self):
        """
        After a request is written the reactor is kept turning (a pending
        C{callLater(0)}) until the budget is spent.
        """
        self.poll.requestSent()
        self.assertEqual(self.turn(0.00004), 1)
        self.assertEqual(self.turn(0.00004), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.turn(0.00004)  # 120 us after: the budget is spent
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answeredStopsAtNextTurn(self):
        """
        Once the answer came, the pending poll lapses at the next turn, and
        the answer's time is kept.
        """
        self.poll.requestSent()
        self.timer.now += 0.00003
        self.poll.answered()
        self.assertAlmostEqual(self.poll.lastAnswer, 0.00003)
        self.turn()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nextRequestKeepsPolling(self):
        """
        An answer followed at once by the next request (10 clients, say)
        keeps one pending poll: none is cancelled and set again.
        """
        self.poll.requestSent()
        self.timer.now += 0.00003
        self.poll.answered()
        self.poll.requestSent()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.turn(0.00001)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_slowTargetSleeps(self):
        """
        After an answer that took longer than the budget, the reactor is
        left to sleep; a fast answer again brings polling back.
        """
        self.poll.requestSent()
        self.timer.now += 0.020
        self.poll.answered()
        self.turn()
        self.poll.requestSent()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.timer.now += 0.00005
        self.poll.answered()
        self.poll.requestSent()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_slowTargetProbed(self):
        """
        One in L{PROBE_EVERY} requests to a target judged too slow is
        polled for anyway: its last answer's time counted its wake-up, and
        polling may bring it back within the budget.
        """
        polled = []
        for _ in range(1 + PROBE_EVERY * 2):
            self.poll.requestSent()
            polled.append(bool(self.clock.getDelayedCalls()))
            self.poll.stop()
            self.timer.now += 0.0003
            self.poll.answered()
        self.assertEqual(polled.count(True), 1 + 2)  # the first, then probes

    def test_clientDue(self):
        """
        After a client's answer is written, its next request is polled for
        if it sent the last one within the budget of its previous answer;
        not if it took longer, nor when that is not known yet.
        """
        self.poll.replied(None, self.timer())
        self.poll.replied(0.5, self.timer())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.poll.replied(0.00005, self.timer())
        self.assertEqual(self.turn(0.00005), 1)
        self.assertEqual(self.turn(0.00004), 1)
        self.turn(0.00002)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def pollTurns(self, busyTurns, idleTurns, count):
        """
        C{count} polled turns (while a request is due, the timer standing
        still), in cycles of C{busyTurns} turns that each found a request
        to read, then C{idleTurns} that found nothing.
        """
        self.poll.requestSent()
        cycle = [True] * busyTurns + [False] * idleTurns
        for i in range(count):
            if cycle[i % len(cycle)]:
                self.poll.requestReceived()
            self.turn()

    def busyWindow(self, seconds):
        """
        A window of L{WINDOW} polled turns that all found work (a proxy
        kept busy by many clients), spread over C{seconds} (less than the
        budget per turn): polling saved no sleep, and a trial without
        polling starts.

        @return: the activity counted in it.
        """
        activity = self.poll.activity
        self.poll.requestSent()
        for _ in range(WINDOW):
            # Each turn an answer comes, and a request that goes out.
            self.timer.now += seconds / WINDOW
            self.poll.answered()
            self.poll.requestReceived()
            self.poll.requestSent()
            self.assertEqual(self.turn(), 1)
        self.assertEqual(self.poll.resting, TRIAL)
        return self.poll.activity - activity

    def trial(self, seconds):
        """
        The L{TRIAL} answers without polling, over C{seconds}: none is
        polled for.
        """
        for _ in range(TRIAL):
            self.poll.requestSent()
            self.poll.replied(0.00001, self.timer())
            self.assertEqual(self.clock.getDelayedCalls(), [])
            self.timer.now += seconds / TRIAL
            self.poll.answered()
            self.poll.requestReceived()

    def test_restsWhenRestingIsFaster(self):
        """
        When a polled window saved no sleep, it stops polling for a trial
        of L{TRIAL} answers; if that was faster than the polled window, it
        rests for L{REST} more answers, then polls again.
        """
        counted = self.busyWindow(0.05)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Each answer counts once, and its request once: 2 * TRIAL in all,
        # faster than the window.
        self.trial(0.05 * 2 * TRIAL / counted * 0.8)
        self.assertEqual(self.poll.resting, REST)
        self.poll.requestSent()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for _ in range(REST):
            self.poll.answered()
        self.poll.requestSent()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_pollsWhenPollingIsFaster(self):
        """
        When the trial was slower than the polled window (the few sleeps
        polling saved cost more than its timed calls), polling resumes at
        once, and the next L{TRUST} windows are not judged on sleeps saved;
        the one after them is.
        """
        counted = self.busyWindow(0.05)
        self.trial(0.05 * 2 * TRIAL / counted * 1.25)
        self.assertEqual(self.poll.resting, 0)
        self.poll.requestSent()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.pollTurns(1, 0, WINDOW * TRUST)
        self.assertEqual(self.poll.resting, 0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.busyWindow(0.05)

    def test_keepsPollingWhileItSavesSleeps(self):
        """
        Idle turns cost nothing (there was nothing else to do): one busy
        turn, then twenty that found nothing (one client, waiting for its
        answer) is a sleep saved per busy turn, and polling goes on.
        """
        self.pollTurns(1, 20, WINDOW)
        self.assertEqual(self.poll.resting, 0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_judgedBySleepsSavedPerBusyTurn(self):
        """
        Four busy turns to a sleep saved (as with 100 Modbus clients) is
        worth polling for; twenty (HTTP from 10 clients) is not, however
        long the run of idle turns that saved the sleep.
        """
        self.assertGreater(1 / 4, MIN_SAVED)
        self.pollTurns(4, 1, WINDOW)
        self.assertEqual(self.poll.resting, 0)
        self.assertLess(1 / 20, MIN_SAVED)
        self.pollTurns(20, 5, WINDOW)
        self.assertEqual(self.poll.resting, TRIAL)

    def test_stop(self):
        """
        L{BusyPoll.stop} cancels the pending poll at once.
        """
        self.poll.requestSent()
        self.poll.replied(0.00001, self.timer())
        self.poll.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class NextTurnTests(TestCase):
    """
    L{NextTurn} on the reactor the tests run on (epoll), and where it is not
    used.
    """

    def setUp(self):
        self.nextTurn = NextTurn.of(reactor)

    def test_onTheReactor(self):
        """
        The reactor's C{timeout()} is its L{NextTurn}, one for all.
        """
        self.assertIsInstance(self.nextTurn, NextTurn)
        self.assertIs(reactor.timeout, self.nextTurn)
        self.assertIs(NextTurn.of(reactor), self.nextTurn)

    def test_notWhereTheLoopDoesNotAsk(self):
        """
        A reactor whose loop never asks its C{timeout()} (the asyncio
        reactor runs asyncio's loop) and a L{Clock} get none: their polls
        are timed calls.
        """
        self.assertIsNone(NextTurn.of(Clock()))
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        other = AsyncioSelectorReactor(loop)
        self.addCleanup(other.removeAll)
        self.assertIsNone(NextTurn.of(other))
        self.assertNotIsInstance(vars(other).get("timeout"), NextTurn)
        clock = Clock()
        poll = BusyPoll(clock, 0.0001)
        poll.requestSent()
        self.assertEqual([call.func for call in clock.getDelayedCalls()], [poll._poll])

    async def test_calledAtTheNextTurn(self):
        """
        What is due is called at the next turn, not at once, and no timed
        call is made for it.
        """
        timedCalls = len(reactor.getDelayedCalls())
        called = Deferred()
        self.nextTurn.call(lambda: called.callback("called"))
        self.assertFalse(called.called)
        self.assertEqual(len(reactor.getDelayedCalls()), timedCalls)
        self.assertEqual(await called, "called")

    def test_noSleepWhileDue(self):
        """
        The reactor may not sleep while something asked for the next turn
        again; once nothing did, it sleeps as long as its timed calls allow.
        """
        calls = []

        def again():
            calls.append(len(calls))
            if len(calls) < 2:
                self.nextTurn.call(again)

        timed = reactor.callLater(5, lambda: None)
        self.addCleanup(timed.cancel)
        self.nextTurn.call(again)
        self.assertEqual(reactor.timeout(), 0)
        self.assertEqual(calls, [0])
        sleep = reactor.timeout()
        self.assertEqual(calls, [0, 1])
        self.assertGreater(sleep, 0)
        self.assertLessEqual(sleep, 5)
        self.assertEqual(self.nextTurn.due, [])

    def test_stoppedFromACall(self):
        """
        A call that stops the reactor does not leave it asleep before its
        shutdown (which the reactor runs with its timed calls).
        """
        other = EPollReactor()
        # (A reactor of its own, never run again: close its descriptors.)
        self.addCleanup(other._poller.close)
        self.addCleanup(other.waker.connectionLost, None)
        safety = []
        other.callWhenRunning(lambda: NextTurn.of(other).call(other.stop))
        other.callLater(30, lambda: (safety.append("stopped"), other.stop()))
        other.run(installSignalHandlers=False)
        self.assertEqual(safety, [])

    def test_errorLogged(self):
        """
        An error in one call is logged, and the others are made.
        """
        calls = []
        self.nextTurn.call(lambda: 1 / 0)
        self.nextTurn.call(lambda: calls.append("after"))
        reactor.timeout()
        self.assertEqual(calls, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_discard(self):
        """
        A call discarded is not made.
        """
        calls = []

        def discarded():
            calls.append("discarded")

        self.nextTurn.call(discarded)
        self.nextTurn.call(lambda: calls.append("kept"))
        self.nextTurn.call(discarded)
        self.nextTurn.discard(discarded)
        reactor.timeout()
        self.assertEqual(calls, ["kept"])


class OptionTests(SynchronousTestCase):
    def test_defaultOn(self):
        """
        --busy-poll is 100 us unless told otherwise; 0 turns it off.
        """
        on = buildMultiplexer("--protocol", "modbus", "--target", "127.0.0.1:1502")
        self.assertAlmostEqual(on.queue.busyPoll.budget, 0.0001)
        off = buildMultiplexer(
            "--protocol", "modbus", "--target", "127.0.0.1:1502", "--busy-poll", "0"
        )
        self.assertIsNone(off.queue.busyPoll)


class EndToEndTests(TestCase):
    timeout = 60

    async def test_quickClientPolledFor(self):
        """
        A client that sends its next request as soon as it has its answer
        has it polled for; one that waits longer than the budget does not.
        """
        target = FaultTarget("modbus", answer)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target.listen(self), "--busy-poll", "20ms"
        )
        poll = multiplexer.queue.busyPoll
        quick = await connect(self, port)
        for tid in range(3):
            self.assertEqual(
                await ask(quick, readRequest(tid, tid)), readResponse(tid, tid)
            )
        session = next(iter(multiplexer.clients))
        self.assertLess(session._thinkTime, 0.02)
        self.assertGreater(poll._requestUntil, poll.timer())

        slow = await connect(self, port)
        for tid in range(2):
            await deferLater(reactor, 0.05)
            self.assertEqual(
                await ask(slow, readRequest(tid, 20 + tid)), readResponse(tid, 20 + tid)
            )
        poll._requestUntil = 0.0
        await deferLater(reactor, 0.05)
        self.assertEqual(await ask(slow, readRequest(9, 29)), readResponse(9, 29))
        self.assertEqual(poll._requestUntil, 0.0)

    async def test_pymodbusThroughBusyPoll(self):
        """
        pymodbus clients through tcpmux with --busy-poll to pymodbus's own
        server: every answer is the client's own; the device answered within
        the budget, so tcpmux polled; once every client is done no poll is
        left pending in the reactor.
        """
        device, devicePort = await runExample(self, "modbus_device.py", "--port", "0")
        port, multiplexer = await startMultiplexer(
            self, "modbus", devicePort, "--busy-poll", "5ms"
        )
        results = await gatherResults(
            [deferToThread(clientSession, port, index) for index in range(5)]
        )
        for index, seen in enumerate(results):
            self.assertEqual(
                seen, [[index * 100 + round_, round_, index] for round_ in range(5)]
            )
        poll = multiplexer.queue.busyPoll
        self.assertLess(poll.lastAnswer, 0.005)
        await deferLater(reactor, 0.01)
        self.assertIsNone(poll._call)

    async def test_polledAtTheReactorsTurns(self):
        """
        On the real reactor, polling for an answer is done by its
        L{NextTurn}: while the target reads the request, the poll is due at
        the next turn and no timed call is pending for it; once the answer
        came and the budget is spent, nothing is due.
        """
        seen = []

        def looking(connection, request):
            seen.append(
                (
                    poll._poll in NextTurn.of(reactor).due,
                    [call for call in reactor.getDelayedCalls() if call.func == poll._poll],
                )
            )
            connection.answer(request)

        target = FaultTarget("modbus", looking)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target.listen(self), "--busy-poll", "20ms"
        )
        poll = multiplexer.queue.busyPoll
        self.assertIs(poll._nextTurn, NextTurn.of(reactor))
        client = await connect(self, port)
        self.assertEqual(await ask(client, readRequest(1, 10)), readResponse(1, 10))
        self.assertEqual(seen, [(True, [])])
        await until(lambda: poll._call is None)
        self.assertNotIn(poll._poll, NextTurn.of(reactor).due)

    async def test_slowTargetNotPolled(self):
        """
        A target slower than the budget (every answer takes 30 ms) is
        waited for asleep: after its first answer, no poll is set when the
        next request is written, and its answers are right.
        """

        def later(connection, request):
            reactor.callLater(0.03, connection.answer, request)

        target = FaultTarget("modbus", later)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target.listen(self), "--busy-poll", "1ms"
        )
        poll = multiplexer.queue.busyPoll
        client = await connect(self, port)
        self.assertEqual(await ask(client, readRequest(1, 10)), readResponse(1, 10))
        self.assertGreater(poll.lastAnswer, 0.001)
        pending = ask(client, readRequest(2, 11))
        await until(lambda: len(target.requests) == 2)
        self.assertIsNone(poll._call)
        self.assertEqual(await pending, readResponse(2, 11))
