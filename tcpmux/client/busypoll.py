# -*- test-case-name: tests.test_busypoll -*-
"""
Polling for a fast target's answer instead of sleeping until it comes.

With nothing else to do, the reactor sleeps in C{epoll_wait} until the
target's answer arrives, and being woken costs the proxy's core a wake-up:
tens of microseconds on a virtual machine, as much as the whole round trip
to a fast target. While an answer is due, L{BusyPoll} keeps a
C{callLater(0)} pending, so that the reactor polls its sockets without
sleeping, for at most C{budget} seconds after the request was written.

It only polls for targets worth it: when the last answer took longer than
the budget (a serial line, a busy device), it lets the reactor sleep, and
looks again at the next answer's time.
"""

from time import perf_counter


class BusyPoll:
    """
    Keeps the reactor polling while answers from a fast target are due.

    @ivar budget: the longest it polls after a request is written, in
        seconds.
    @ivar lastAnswer: how long the last answer took, in seconds (L{None}
        before the first).
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
        self._until = 0.0
        self._call = None

    def requestSent(self):
        """
        A request was written to the target; its answer is due.
        """
        self._inFlight += 1
        self._sentAt = now = self.timer()
        if self.lastAnswer is not None and self.lastAnswer > self.budget:
            # A slow target: sleeping until it answers is cheaper.
            return
        self._until = now + self.budget
        if self._call is None:
            self._call = self.clock.callLater(0, self._poll)

    def answered(self):
        """
        An answer (or a failure) came for a request sent.
        """
        self._inFlight -= 1
        self.lastAnswer = self.timer() - self._sentAt
        # With nothing more due, the pending poll lapses at the next turn:
        # cancelling it here would only have the next request set it again.

    def stop(self):
        """
        Stop polling now (tcpmux is stopping).
        """
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _poll(self):
        # One reactor turn passed without the answer: another, if the budget
        # allows.
        self._call = None
        if self._inFlight and self.timer() < self._until:
            self._call = self.clock.callLater(0, self._poll)
