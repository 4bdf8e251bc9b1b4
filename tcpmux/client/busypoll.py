# -*- test-case-name: tests.test_busypoll -*-
"""
Polling for what is about to arrive instead of sleeping until it comes.

With nothing else to do, the reactor sleeps in C{epoll_wait} until the next
bytes arrive, and being woken costs the proxy's core a wake-up: tens of
microseconds on a virtual machine, as much as a whole round trip to a fast
target. While bytes are due within a short time, L{BusyPoll} keeps a poll
due at the reactor's next turn, so that the reactor polls its sockets
without sleeping, for at most C{budget} seconds. Two things are due:

  - a fast target's answer, after a request was written to it: polled for
    when the target's last answer came within the budget (a serial line or
    a busy device is waited for asleep);
  - a client's next request, after its answer was written, when that client
    sent its last request within the budget of its previous answer (a
    client polling in a tight loop; one polling every second is not).

What is waited for asleep is measured with the wake-up in it, which alone
can take it past the budget, and would keep it there: so every
L{PROBE_EVERY}th thing judged too slow is polled for anyway, to find out.

Polling pays only where the reactor would otherwise sleep. A proxy kept busy
by many clients finds bytes waiting at almost every turn: polling saves it
few wake-ups, and costs a poll at every turn that had work to do (a
turn that found nothing costs nothing: there was nothing else to do). So,
while it polls, L{BusyPoll} counts the turns that found something to do,
and the runs of turns that found nothing: each run is a sleep (and a
wake-up) saved. A window of L{WINDOW} polled turns that saved at least
L{MIN_SAVED} sleeps per busy turn is plainly worth it, and polling goes on.

One that saved fewer may still have been worth it: the few sleeps left can
cost more than all the polls (Modbus at 1,000 clients), or not (HTTP
at 1,000 clients). That is settled by measuring: polling stops for a trial
of L{TRIAL} answers, and the rate of answers and requests without polling
is set against the rate in the window just judged. If the rest was faster,
it goes on for L{REST} more answers, then polling is judged again; if not,
polling resumes, and the next L{TRUST} windows are not judged on sleeps.
(Both rates are over wall time, quiet spells included: with bursty clients
the comparison is rough, but it only ever decides between two ways that
both work, and it is made again soon.)

A polled turn is the reactor's cheapest: on a reactor whose main loop asks
its own C{timeout()} how long it may sleep (Twisted's epoll, poll and select
reactors), L{NextTurn} answers 0 while a poll is due and calls it, with no
L{DelayedCall} made, sorted and run for every turn; elsewhere (the asyncio
reactor, L{twisted.internet.task.Clock}) a poll is a C{callLater(0)}.
"""

from functools import partial
from time import perf_counter

from twisted.internet.base import ReactorBase
from twisted.logger import Logger

# One in this many answers or requests judged too slow to poll for is polled
# for anyway (at most a budget's CPU time each).
PROBE_EVERY = 16

# Polled turns per judgement of whether polling pays.
WINDOW = 1024
# Below this many sleeps saved per polled turn that had work to do, polling
# costs more than it saves. Measured on a 2-core virtual machine (see
# benchmarks/README.md), windows of Modbus at 10 and 100 clients, where
# polling gave 1.4x the round trips/s, mostly saved 0.2-0.3 and seldom less
# than 0.12; where it cost 5-10%, HTTP from 10 clients saved 0.05 and less,
# Modbus at 1,000 clients 0.01-0.1.
MIN_SAVED = 0.08
# Answers without polling, once a window saved too few sleeps, whose rate
# is set against the window's: long enough to measure, short enough that a
# trial that finds polling faster costs little.
TRIAL = 1024
# Answers to wait, once resting was measured faster, before polling (and
# judging) again.
REST = 4096
# Windows not judged on sleeps saved after a trial found polling as fast.
TRUST = 8


class NextTurn:
    """
    Calls functions at a reactor's next turn, and keeps the reactor from
    sleeping until it has: a C{callLater(0, f)} without a L{DelayedCall}.

    A reactor built on L{ReactorBase} runs its timed calls, asks its
    C{timeout()} how long it may wait for I/O, and waits: a L{NextTurn} is
    that C{timeout()}, set on the reactor itself (one per reactor, shared by
    everything on it). It calls what was due, then answers 0 if any of it
    asked for the next turn again, else whatever the reactor's own
    C{timeout()} answers. A timed call for every turn would cost the
    reactor an object made, a heap push and pop, and two extra clock
    reads: more than the rest of a turn that finds nothing to do
    (C{benchmarks/turn.py}: 2.3 us a turn with one, 1.0 with this).

    @ivar due: what to call at the next turn.
    """

    log = Logger()

    def __init__(self, reactor):
        self.reactor = reactor
        self.due = []

    @classmethod
    def of(cls, reactor):
        """
        The L{NextTurn} of C{reactor}, set on it the first time it is asked
        for, or L{None} if C{reactor}'s main loop does not ask its own
        C{timeout()} (the asyncio reactor, a L{twisted.internet.task.Clock}).
        """
        nextTurn = vars(reactor).get("timeout")
        if isinstance(nextTurn, cls):
            return nextTurn
        kind = type(reactor)
        if not (
            isinstance(reactor, ReactorBase)
            and kind.run is ReactorBase.run
            and kind.mainLoop is ReactorBase.mainLoop
            and kind.timeout is ReactorBase.timeout
        ):
            return None
        reactor.timeout = nextTurn = cls(reactor)
        return nextTurn

    def call(self, f):
        """
        Call C{f} at the reactor's next turn, once its timed calls have run
        and before it waits for I/O; until then it does not sleep.

        @return: C{f}, to L{discard} it with.
        """
        self.due.append(f)
        return f

    def discard(self, f):
        """
        Do not call C{f} after all.
        """
        while f in self.due:
            self.due.remove(f)

    def __call__(self):
        """
        The reactor's C{timeout()}: call what was due, and say how long the
        reactor may sleep.
        """
        due = self.due
        if due:
            self.due = []
            for f in due:
                try:
                    f()
                except BaseException:
                    self.log.failure("Unhandled error in a call at the reactor's turn")
            # (A call that stopped the reactor leaves the shutdown to the
            # reactor's next run of its timed calls: it must not sleep first.)
            if self.due or self.reactor._justStopped:
                return 0
        return ReactorBase.timeout(self.reactor)


class BusyPoll:
    """
    Keeps the reactor polling while bytes are due within C{budget} seconds.
    One per multiplexer, shared by its round-trip queues and clients.

    @ivar budget: the longest it polls for one thing due, in seconds.
    @ivar lastAnswer: how long the target's last answer took, in seconds
        (L{None} before the first).
    @ivar activity: how many answers and requests arrived so far.
    @ivar resting: how many more answers to wait before polling again,
        in a trial or once resting was measured faster (0: polling).
    """

    lastAnswer = None
    activity = 0
    resting = 0

    def __init__(self, clock, budget, timer=perf_counter):
        """
        @param clock: the reactor (L{IReactorTime}) to keep busy.
        @param timer: real time in seconds: the budget is spent in real
            time whatever C{clock} says (a L{twisted.internet.task.Clock}
            in tests does not move by itself).
        """
        self.budget = budget
        self.timer = timer
        # How a poll is set for the next turn: the reactor's NextTurn where
        # it has one, else a callLater(0).
        self._nextTurn = NextTurn.of(clock)
        if self._nextTurn is not None:
            self._schedule = self._nextTurn.call
        else:
            self._schedule = partial(clock.callLater, 0)
        self._inFlight = 0
        self._sentAt = 0.0
        self._answerUntil = 0.0
        self._requestUntil = 0.0
        # The poll set for the next turn (what _schedule returned), if any.
        self._call = None
        self._tooSlow = 0
        # The judgement: polled turns, those that had work to do and sleeps
        # saved in this window, and whether the last turn found nothing.
        self._turns = 0
        self._busy = 0
        self._saved = 0
        self._idle = False
        self._activityThen = 0
        # Where the window (and a trial) started, in timer time and
        # activity; the judged window's rate; windows still trusted.
        self._windowAt = 0.0
        self._windowActivity = 0
        self._pollRate = 0.0
        self._trialAt = None
        self._trialActivity = 0
        self._trusted = 0

    def _probeAnyway(self):
        """
        Whether to poll for something judged too slow to poll for: one in
        L{PROBE_EVERY} is, to find out whether it still is.
        """
        self._tooSlow += 1
        if self._tooSlow < PROBE_EVERY:
            return False
        self._tooSlow = 0
        return True

    def requestSent(self):
        """
        A request was written to a target; its answer is due.
        """
        self._inFlight += 1
        self._sentAt = now = self.timer()
        if self.resting:
            return
        lastAnswer = self.lastAnswer
        if lastAnswer is not None and lastAnswer > self.budget and not self._probeAnyway():
            # A slow target: sleeping until it answers is cheaper.
            return
        self._answerUntil = now + self.budget
        self._start()

    def answered(self):
        """
        An answer (or a failure) came for a request sent.
        """
        self._inFlight -= 1
        self.activity += 1
        if self.resting:
            self.resting -= 1
            if not self.resting and self._trialAt is not None:
                self._endTrial()
        self.lastAnswer = self.timer() - self._sentAt
        # With nothing more due, the pending poll lapses at the next turn:
        # cancelling it here would only have the next request set it again.

    def replied(self, thinkTime, now):
        """
        A client was written its answer at C{now} (L{timer} time); it took
        C{thinkTime} seconds to send its next request after the previous
        answer (L{None}: unknown).
        """
        if self.resting:
            return
        # (Unknown, None, is judged too slow.)
        if (thinkTime is not None and thinkTime <= self.budget) or self._probeAnyway():
            self._requestUntil = now + self.budget
            self._start()

    def requestReceived(self):
        """
        A client's whole request arrived.

        @return: the L{timer}'s time now.
        """
        self.activity += 1
        return self.timer()

    def stop(self):
        """
        Stop polling now (tcpmux is stopping).
        """
        self._answerUntil = self._requestUntil = 0.0
        call, self._call = self._call, None
        if call is None:
            return
        if self._nextTurn is not None:
            self._nextTurn.discard(call)
        else:
            call.cancel()

    def _start(self):
        if self._call is None:
            self._call = self._schedule(self._poll)

    def _poll(self):
        # One reactor turn passed without it. Did that turn find anything
        # to do? The first idle turn of a run is a sleep saved: asleep, the
        # reactor would have had to be woken for whatever ends the run.
        self._call = None
        now = self.timer()
        if not self._turns:
            self._windowAt, self._windowActivity = now, self.activity
        if self.activity == self._activityThen:
            if not self._idle:
                self._idle = True
                self._saved += 1
        else:
            self._idle = False
            self._activityThen = self.activity
            self._busy += 1
        self._turns += 1
        if self._turns == WINDOW:
            self._judge(now)
            if self.resting:
                return
        # Another turn, if still due.
        if (self._inFlight and now < self._answerUntil) or now < self._requestUntil:
            self._call = self._schedule(self._poll)

    def _judge(self, now):
        """
        The end of a window of polled turns: if they saved too few sleeps
        for the turns that had work to do, stop polling for a trial, to
        measure whether that is faster.
        """
        if self._trusted:
            self._trusted -= 1
        elif self._saved < MIN_SAVED * self._busy:
            self._pollRate = _rate(self.activity - self._windowActivity, now - self._windowAt)
            self._trialAt, self._trialActivity = now, self.activity
            self.resting = TRIAL
        self._turns = self._busy = self._saved = 0

    def _endTrial(self):
        """
        The trial without polling is over: rest on if it was faster than
        the window that was polled, else poll, trusted for a while.
        """
        restRate = _rate(self.activity - self._trialActivity, self.timer() - self._trialAt)
        self._trialAt = None
        if restRate > self._pollRate:
            self.resting = REST
        else:
            self._trusted = TRUST


def _rate(count, seconds):
    # (A timer too coarse to see the time pass reads as infinitely fast.)
    return count / seconds if seconds > 0 else float("inf")
