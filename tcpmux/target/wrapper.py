# -*- test-case-name: tests.test_gateway -*-
"""
Targets that wrap a target: what happens to every round trip on its way to
one device, behind the round-trip queue (a gap between requests, retries).
"""

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpmux.errors import TargetTimeout
from tcpmux.interfaces import ITarget


@implementer(ITarget)
class TargetWrapper:
    """
    An L{ITarget} that passes everything to C{target}; subclasses change
    L{roundTrip}.
    """

    def __init__(self, target):
        self.target = target

    @property
    def name(self):
        return self.target.name

    @property
    def concurrency(self):
        return self.target.concurrency

    @property
    def ready(self):
        return self.target.ready

    def start(self):
        self.target.start()

    def release(self):
        self.target.release()

    def stop(self):
        return self.target.stop()

    def roundTrip(self, request, deadline=None, partReceived=None):
        return self.target.roundTrip(request, deadline, partReceived)


class SpacedTarget(TargetWrapper):
    """
    At least C{gap} seconds between the end of one answer and the next
    request written to the target (C{--request-gap}), whoever asks: some
    devices drop requests that come too soon after the last answer.

    It sits behind the queue, so requests still go one at a time (or as
    many as the target carries), and the gap counts against each request's
    deadline.
    """

    # Said when a request is given up while it waits.
    waitingFor = "the request gap"

    def __init__(self, target, gap, clock):
        TargetWrapper.__init__(self, target)
        self.gap = gap
        self.clock = clock
        self._quietUntil = None

    def quietAfter(self, request):
        """
        Seconds the target is left alone after the answer to C{request}.
        """
        return self.gap

    def roundTrip(self, request, deadline=None, partReceived=None):
        wait = 0.0
        if self._quietUntil is not None:
            wait = self._quietUntil - self.clock.seconds()
        if wait <= 0:
            return self._send(request, deadline, partReceived)

        def cancel(waited):
            # Given up while waiting: not sent (ITarget's TargetTimeout,
            # not a bare CancelledError).
            call.cancel()
            waited.errback(
                Failure(TargetTimeout(f"not sent: given up during {self.waitingFor}"))
            )

        waited = Deferred(canceller=cancel)
        call = self.clock.callLater(wait, waited.callback, None)
        return waited.addCallback(
            lambda ignored: self._send(request, deadline, partReceived)
        )

    def _send(self, request, deadline, partReceived):
        # Until the answer, the queue sends nothing else.
        self._quietUntil = None
        return self.target.roundTrip(request, deadline, partReceived).addBoth(
            self._answered, self.quietAfter(request)
        )

    def _answered(self, result, quiet):
        self._quietUntil = self.clock.seconds() + quiet
        return result
