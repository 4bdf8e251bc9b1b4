# -*- test-case-name: tests.test_busypoll -*-
"""
Polling for what is about to arrive instead of sleeping until it comes.

With nothing else to do, the reactor sleeps in C{epoll_wait} until the next
bytes arrive, and being woken costs the proxy's core a wake-up: tens of
microseconds on a virtual machine, as much as a whole round trip to a fast
target. While bytes are due within a short time, L{BusyPoll} keeps a
C{callLater(0)} pending, so that the reactor polls its sockets without
sleeping, for at most C{budget} seconds. Two things are due:

  - a fast target's answer, after a request was written to it: polled for
    when the target's last answer came within the budget (a serial line or
    a busy device is waited for asleep);
  - a client's next request, after its answer was written, when that client
    sent its last request within the budget of its previous answer (a
    client polling in a tight loop; one polling every second is not).

What is waited for asleep is measured with the wake-up in it, which alone
can take it past the budget, and would keep it there: so every
L{PROBE_EVERY}th thing judged too slow is polled for anyway, to find out.
"""

from time import perf_counter

# One in this many answers or requests judged too slow to poll for is polled
# for anyway (at most a budget's CPU time each).
PROBE_EVERY = 16


class BusyPoll:
    """
    Keeps the reactor polling while bytes are due within C{budget} seconds.
    One per multiplexer, shared by its round-trip queues and clients.

    @ivar budget: the longest it polls for one thing due, in seconds.
    @ivar lastAnswer: how long the target's last answer took, in seconds
        (L{None} before the first).
    """

    lastAnswer = None

    def __init__(self, clock, budget, timer=perf_counter):
        """
        @param clock: the reactor (L{IReactorTime}) to keep busy.
        @param timer: real time in seconds: the budget is spent in real
            time whatever C{clock} says (a L{twisted.internet.task.Clock}
            in tests does not move by itself).
        """
        self.clock = clock
        self.budget = budget
        self.timer = timer
        self._inFlight = 0
        self._sentAt = 0.0
        self._answerUntil = 0.0
        self._requestUntil = 0.0
        self._call = None
        self._tooSlow = 0

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
        self.lastAnswer = self.timer() - self._sentAt
        # With nothing more due, the pending poll lapses at the next turn:
        # cancelling it here would only have the next request set it again.

    def replied(self, thinkTime, now):
        """
        A client was written its answer at C{now} (L{timer} time); it took
        C{thinkTime} seconds to send its next request after the previous
        answer (L{None}: unknown).
        """
        # (Unknown, None, is judged too slow.)
        if (thinkTime is not None and thinkTime <= self.budget) or self._probeAnyway():
            self._requestUntil = now + self.budget
            self._start()

    def stop(self):
        """
        Stop polling now (tcpmux is stopping).
        """
        self._answerUntil = self._requestUntil = 0.0
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _start(self):
        if self._call is None:
            self._call = self.clock.callLater(0, self._poll)

    def _poll(self):
        # One reactor turn passed without it: another, if still due.
        self._call = None
        now = self.timer()
        if (self._inFlight and now < self._answerUntil) or now < self._requestUntil:
            self._call = self.clock.callLater(0, self._poll)
