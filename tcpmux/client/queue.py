# -*- test-case-name: tests.test_multiplexer -*-
"""
The round-trip queue: one request at a time (or as many as the target
carries) to the target, each with one deadline.
"""

from bisect import bisect_left

from twisted.internet.defer import (
    CancelledError,
    DeferredLock,
    DeferredSemaphore,
    fail,
    gatherResults,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpmux.errors import GatewayError, TargetTimeout, TargetUnavailable
from tcpmux.interfaces import IDispatcher
from tcpmux.logs import RepeatedWarnings
from tcpmux.metrics.counters import LATENCY_BOUNDS, RoundTripStats

# How many bytes of each message -v dumps: enough for every header tcpmux
# frames, and a log line stays short whatever the message's size.
DUMP_BYTES = 64


class RoundTrip:
    """
    One request on its way through the queue.

    @ivar result: a L{Deferred} that fires with the whole response, or
        fails with a L{GatewayError}.
    @ivar sent: whether its turn came and it went to the target.
    @ivar expired: whether its deadline passed before it was answered.
    """

    # (Class defaults, not slots: a round trip is made for every request,
    # and most of these are never set, or set once it is under way.)
    result = deadline = sentAt = None
    sent = withdrawn = expired = False

    def __init__(self, request, client, partReceived, submittedAt):
        self.request = request
        self.client = client
        self.partReceived = partReceived
        self.submittedAt = submittedAt

    def withdraw(self):
        """
        Its client is gone: if it has not gone to the target yet, it never
        will. (One already sent is left to finish, so that the connection
        stays in step.)
        """
        if not self.sent:
            self.withdrawn = True
            self.result.cancel()


@implementer(IDispatcher)
class RoundTripQueue:
    """
    Carries round trips to an L{ITarget}, C{target.concurrency} at a time
    (a L{DeferredLock}, or a L{DeferredSemaphore} for a pool or pipeline),
    in the order they were submitted.

    Each round trip has one deadline, C{timeout} seconds from when it is
    submitted: waiting for its turn, for a connection and for the answer
    all count. When it passes, the round trip is cancelled wherever it is,
    and what it was doing then says what its client is told:
    L{TargetTimeout} if it was waiting for its turn or for the answer,
    L{TargetUnavailable} if it was waiting for a connection.

    Every round trip has the same timeout, so deadlines come in the order
    round trips are submitted: one timer, set for the oldest unanswered
    round trip's deadline, serves them all, instead of a timer set and
    cancelled for each.

    With a C{busyPoll} (L{tcpmux.client.busypoll.BusyPoll}, C{--busy-poll}),
    the reactor polls rather than sleeps after each request is written,
    while the answer is due, if the target answers that fast.

    @ivar stopping: once set, every round trip fails at once.
    @ivar stats: the L{RoundTripStats} of its round trips, once L{observe}
        was called (C{--metrics}, the status page), else L{None}.
    """

    log = Logger()
    stopping = False
    stats = None

    def __init__(
        self, target, clock, timeout=None, verbose=False, describe=None, busyPoll=None
    ):
        self.target = target
        self.clock = clock
        self.timeout = timeout
        self.verbose = verbose
        self.describe = describe
        self.concurrency = target.concurrency
        if self.concurrency == 1:
            self.lock = DeferredLock()
        else:
            self.lock = DeferredSemaphore(self.concurrency)
        self.failures = RepeatedWarnings(self.log, clock)
        # Unanswered round trips with a deadline, oldest first (a dict keeps
        # the order, and forgets an answered one at once), and the timer
        # for the oldest one's deadline.
        self._unanswered = {}
        self._deadlineCall = None
        self.busyPoll = busyPoll

    def observe(self):
        """
        Keep statistics of the round trips from now on, for whatever reads
        them (C{--metrics}, the status page); unobserved, the path of every
        answer does not count it.

        @return: the L{RoundTripStats}.
        """
        if self.stats is None:
            self.stats = RoundTripStats()
        return self.stats

    @property
    def depth(self):
        """
        How many round trips wait for their turn.
        """
        return len(self.lock.waiting)

    # IDispatcher: the queue is the innermost dispatcher.

    def dispatch(self, request, client, partReceived=None):
        """
        Queue C{request} from C{client} (its name, for logs).

        @param partReceived: called with each part of the answer that may be
            passed on before it is whole.
        @return: its L{RoundTrip}.
        """
        trip = RoundTrip(request, client, partReceived, self.clock.seconds())
        if self.verbose:
            self._dump("request from", client, request)
        if self.stopping:
            trip.result = fail(TargetUnavailable("tcpmux is stopping"))
            trip.result.addErrback(self._failed, trip)
            return trip
        if self.timeout:
            trip.deadline = trip.submittedAt + self.timeout
            self._unanswered[trip] = None
            if self._deadlineCall is None:
                self._deadlineCall = self.clock.callLater(
                    self.timeout, self._deadlinePassed
                )
        # Its turn: the lock. Once answered, _finished releases the lock
        # before the result's callbacks run, so the next request is already
        # on its way to the target while this answer is written.
        trip.result = self.lock.acquire()
        trip.result.addCallbacks(
            self._send, self._failed, callbackArgs=(trip,), errbackArgs=(trip,)
        )
        return trip

    def _send(self, lock, trip):
        trip.sent = True
        trip.sentAt = self.clock.seconds()
        if self.stopping:
            answer = fail(TargetUnavailable("tcpmux is stopping"))
        else:
            try:
                answer = self.target.roundTrip(
                    trip.request, trip.deadline, trip.partReceived
                )
            except BaseException:
                answer = fail()
            if self.busyPoll is not None:
                self.busyPoll.requestSent()
        # The result waits for the answer (and is cancelled through it).
        return answer.addBoth(self._finished, trip)

    def _finished(self, answer, trip):
        """
        The target answered C{trip}, or failed it: let the next one go,
        count it, and pass the answer (or the failure, in its client's
        terms) on.
        """
        if self.busyPoll is not None and not self.stopping:
            self.busyPoll.answered()
        self.lock.release()
        if isinstance(answer, Failure):
            return self._failed(answer, trip)
        # (_forget, in place: this is the path of every answer.)
        self._unanswered.pop(trip, None)
        if self.stopping:
            self._stopTimer()
        stats = self.stats
        if stats is not None:
            now = self.clock.seconds()
            stats.ok += 1
            stats.lastOk = now
            seconds = now - trip.submittedAt
            stats.latency[bisect_left(LATENCY_BOUNDS, seconds)] += 1
            stats.latencySum += seconds
        if self.verbose:
            self._dump("response to", trip.client, answer, trip)
        return answer

    def _deadlinePassed(self):
        """
        The oldest unanswered round trip's deadline may have passed: cancel
        every round trip whose has, and wait for the next.
        """
        self._deadlineCall = None
        now = self.clock.seconds()
        expired = []
        for trip in self._unanswered:
            if trip.deadline > now:
                self._deadlineCall = self.clock.callLater(
                    trip.deadline - now, self._deadlinePassed
                )
                break
            expired.append(trip)
        for trip in expired:
            # (Cancelling one may have ended another: skip it then.)
            if self._unanswered.pop(trip, 1) is None:
                trip.expired = True
                trip.result.cancel()

    def _explain(self, failure, trip):
        """
        C{trip}'s deadline passed and it was cancelled with C{failure}: say
        why in the client's terms.
        """
        timeout = self.timeout
        if failure.check(CancelledError):
            # Still waiting for its turn: never sent.
            return TargetTimeout(
                f"no answer within {timeout}s: still waiting for its turn, not sent"
            )
        if failure.check(TargetUnavailable):
            now = self.clock.seconds()
            if now - trip.sentAt > trip.sentAt - trip.submittedAt:
                # Most of its time went waiting for a connection.
                return TargetUnavailable(f"no connection to the target within {timeout}s")
            return TargetTimeout(f"no answer within {timeout}s: its turn came too late")
        if failure.check(TargetTimeout):
            return TargetTimeout(f"no response from the target within {timeout}s")
        return None

    def _forget(self, trip):
        """
        C{trip} was answered or failed: its deadline no longer counts.
        """
        unanswered = self._unanswered
        unanswered.pop(trip, None)
        # With nothing left to time, the timer is left to lapse (it finds
        # nothing and sets no other), not cancelled: one client's round
        # trips, one at a time, would otherwise cancel one timer and set
        # another per round trip, and the reactor keeps cancelled calls in
        # its heap until they are dozens, which every callLater (busy
        # polling's, one per reactor turn) then sorts through. Once tcpmux
        # is stopping, no timer outlives the queue's work.
        if self.stopping and not unanswered:
            self._stopTimer()

    def _stopTimer(self, result=None):
        if not self._unanswered and self._deadlineCall is not None:
            self._deadlineCall.cancel()
            self._deadlineCall = None
        return result

    def _failed(self, failure, trip):
        self._forget(trip)
        if trip.withdrawn:
            return None
        if trip.expired:
            error = self._explain(failure, trip)
            if error is not None:
                failure = Failure(error)
        if self.stats is not None:
            self.stats.failed(failure.value)
        if failure.check(GatewayError):
            error = failure.value
            self.failures.warn(
                (type(error), str(error)),
                "Request from {client} failed: {error}",
                summary="{count} more requests failed the same way in the last "
                "{window}s: {error}",
                client=trip.client,
                error=error,
            )
        else:
            self.log.failure(
                "Request from {client} failed", failure, client=trip.client
            )
        return failure

    def _dump(self, what, client, message, trip=None):
        timing = ""
        if trip is not None and trip.sent:
            timing = f" after {1000 * (self.clock.seconds() - trip.sentAt):.1f} ms"
        shown = bytes(message[:DUMP_BYTES]).hex(" ")
        if len(message) > DUMP_BYTES:
            shown += f" ... ({len(message) - DUMP_BYTES} more bytes)"
        self.log.debug(
            "{what} {client}{timing}: {size} bytes {summary} {hex}",
            what=what,
            client=client,
            timing=timing,
            size=len(message),
            summary=self.describe(message) if self.describe else "",
            hex=shown,
        )

    def stop(self, timeout):
        """
        Fail every round trip not yet sent, and wait (at most C{timeout}
        seconds) for those in flight to finish.

        @return: a L{Deferred} that fires when none is in flight.
        """
        self.stopping = True
        if self.busyPoll is not None:
            self.busyPoll.stop()
        # Every slot of the lock or semaphore: no round trip in flight.
        drained = gatherResults([self.lock.acquire() for _ in range(self.concurrency)])
        drained.addTimeout(timeout, self.clock)
        drained.addErrback(lambda failure: None)
        return drained.addCallback(self._stopTimer)

    def flushLogs(self):
        self.failures.flushAll()
