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

from tcpmux.errors import GatewayError, TargetTimeout, TargetUnavailable
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
    """

    sent = False
    withdrawn = False
    deadline = None
    result = None

    def __init__(self, request, client, partReceived):
        self.request = request
        self.client = client
        self.partReceived = partReceived

    def withdraw(self):
        """
        Its client is gone: if it has not gone to the target yet, it never
        will. (One already sent is left to finish, so that the connection
        stays in step.)
        """
        if not self.sent:
            self.withdrawn = True
            self.result.cancel()


class RoundTripQueue:
    """
    Carries round trips to an L{ITarget}, C{target.concurrency} at a time
    (a L{DeferredLock}, or a L{DeferredSemaphore} for a pool or pipeline),
    in the order they were submitted.

    Each round trip has one deadline, C{timeout} seconds from when it is
    submitted, enforced by L{Deferred.addTimeout}: waiting for its turn,
    for a connection and for the answer all count. When it passes, the
    round trip is cancelled wherever it is, and what it was doing then
    says what its client is told: L{TargetTimeout} if it was waiting for its
    turn or for the answer, L{TargetUnavailable} if it was waiting for a
    connection.

    @ivar stopping: once set, every round trip fails at once.
    @ivar stats: the L{RoundTripStats} of its round trips (C{--metrics}).
    """

    log = Logger()
    stopping = False

    def __init__(self, target, clock, timeout=None, verbose=False, describe=None):
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
        self.stats = RoundTripStats()

    @property
    def depth(self):
        """
        How many round trips wait for their turn.
        """
        return len(self.lock.waiting)

    def submit(self, request, client, partReceived=None):
        """
        Queue C{request} from C{client} (its name, for logs).

        @param partReceived: called with each part of the answer that may be
            passed on before it is whole.
        @return: its L{RoundTrip}.
        """
        trip = RoundTrip(request, client, partReceived)
        trip.submittedAt = self.clock.seconds()
        if self.verbose:
            self._dump("request from", client, request)
        if self.stopping:
            trip.result = fail(TargetUnavailable("tcpmux is stopping"))
        else:
            # The lock is released before the result's callbacks run, so the
            # next request is already on its way to the target while this
            # answer is written.
            if self.timeout:
                trip.deadline = trip.submittedAt + self.timeout
            trip.result = self.lock.run(self._send, trip)
            if self.timeout:
                trip.result.addTimeout(
                    self.timeout,
                    self.clock,
                    onTimeoutCancel=lambda result, timeout: self._expired(
                        result, timeout, trip
                    ),
                )
        trip.result.addCallbacks(
            self._answered, self._failed, callbackArgs=(trip,), errbackArgs=(trip,)
        )
        return trip

    def _send(self, trip):
        if self.stopping:
            return fail(TargetUnavailable("tcpmux is stopping"))
        trip.sent = True
        trip.sentAt = self.clock.seconds()
        return self.target.roundTrip(trip.request, trip.deadline, trip.partReceived)

    def _expired(self, result, timeout, trip):
        """
        The deadline passed and C{trip} was cancelled: say why in the
        client's terms.
        """
        if result.check(CancelledError):
            # Still waiting for its turn: never sent.
            return Failure(
                TargetTimeout(
                    f"no answer within {timeout}s: still waiting for its "
                    "turn, not sent"
                )
            )
        if result.check(TargetUnavailable):
            now = self.clock.seconds()
            if now - trip.sentAt > trip.sentAt - trip.submittedAt:
                # Most of its time went waiting for a connection.
                return Failure(
                    TargetUnavailable(
                        f"no connection to the target within {timeout}s"
                    )
                )
            return Failure(
                TargetTimeout(
                    f"no answer within {timeout}s: its turn came too late"
                )
            )
        if result.check(TargetTimeout):
            return Failure(
                TargetTimeout(f"no response from the target within {timeout}s")
            )
        return result

    def _answered(self, response, trip):
        now = self.clock.seconds()
        stats = self.stats
        stats.ok += 1
        stats.lastOk = now
        seconds = now - trip.submittedAt
        stats.latency[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        stats.latencySum += seconds
        if self.verbose:
            self._dump("response to", trip.client, response, trip)
        return response

    def _failed(self, failure, trip):
        if trip.withdrawn:
            return None
        if failure.check(GatewayError):
            error = failure.value
            if isinstance(error, TargetTimeout):
                self.stats.timeout += 1
            elif isinstance(error, TargetUnavailable):
                self.stats.unavailable += 1
            else:
                self.stats.error += 1
            self.failures.warn(
                (type(error), str(error)),
                "Request from {client} failed: {error}",
                summary="{count} more requests failed the same way in the last "
                "{window}s: {error}",
                client=trip.client,
                error=error,
            )
        else:
            self.stats.error += 1
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
        # Every slot of the lock or semaphore: no round trip in flight.
        drained = gatherResults([self.lock.acquire() for _ in range(self.concurrency)])
        drained.addTimeout(timeout, self.clock)
        return drained.addErrback(lambda failure: None)

    def flushLogs(self):
        self.failures.flushAll()
