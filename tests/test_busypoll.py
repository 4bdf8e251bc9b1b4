"""
Tests for L{tcpmux.client.busypoll}: polling for a fast target's answer
instead of sleeping, on a L{Clock} with a timer the test moves, and end to
end with pymodbus peers.
"""

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
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
