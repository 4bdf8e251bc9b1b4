# -*- test-case-name: tests.test_target -*-
"""
One connection to the target, carrying one round trip at a time.
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpmux.errors import InvalidResponse, TargetLost, TargetTimeout
from tcpmux.interfaces import IResponseReceiver
from tcpmux.writing import noDelay, writeNow


@implementer(IResponseReceiver)
class TargetSession:
    """
    The receiver of one target connection's response framer: writes a
    request, and fires its round trip with the whole response.

    Any doubt about which request the connection's next bytes answer costs
    the connection: it is renewed, so that a late or surplus answer can never
    reach the next client. Doubt is an abandoned request, an unframeable
    response, a response when none was asked for, or bytes that follow a
    response in the same read (a duplicated answer, say). What cannot be
    told apart is a surplus answer that arrives after the next request was
    written: for protocols whose responses name nothing, it is taken as the
    answer to that request.

    @ivar framer: the response framer this session receives from.
    @ivar pending: the round trip in flight, or L{None}.
    """

    log = Logger()
    transport = None
    pending = None
    retired = False
    _partReceived = None
    _trailingCounted = False

    def __init__(self, factory, framer=None):
        self.factory = factory
        self.framer = framer

    @property
    def busy(self):
        """
        Whether a round trip is in flight.
        """
        return self.pending is not None

    def roundTrip(self, request, partReceived=None):
        """
        Write C{request}; the result fires with the whole response, or fails
        with a L{tcpmux.errors.GatewayError}. Cancelling it abandons the
        request (L{TargetTimeout}) and renews the connection.
        """
        self.pending = response = Deferred(canceller=self._abandon)
        self._partReceived = partReceived
        self.framer.expectResponseTo(request)
        writeNow(self.transport, request)
        return response

    # IResponseReceiver

    def startReceiving(self, framer):
        self.framer = framer
        self.transport = framer.transport
        noDelay(self.transport)
        self.factory.targetConnected(self)

    def messageReceived(self, response):
        if self.retired:
            if self._trailingCounted:
                # The bytes counted as dropped when they were seen.
                self._trailingCounted = False
            else:
                self.factory.droppedResponses += 1
            return
        pending = self._takePending()
        if pending is None:
            # Nothing was asked: a duplicate, or bytes the target pushed.
            # The connection may no longer be in step with its requests.
            self.factory.droppedResponses += 1
            self._retire("a response that answers no request")
            return
        if self.framer.buffered():
            # More bytes came after the answer in the same read, and nothing
            # asked for them: the answer goes to its client, and the next
            # request to a new connection.
            self.factory.droppedResponses += 1
            self._trailingCounted = True
            self._retire("unrequested bytes after a response")
        pending.callback(response)

    def partReceived(self, part):
        if self.retired:
            return
        if self.pending is None:
            self.factory.droppedResponses += 1
            self._retire("part of a response that answers no request")
            return
        if self._partReceived is not None:
            self._partReceived(part)

    def framingError(self, reason, reply):
        why = f"unframeable response: {reason}"
        # Stop offering this connection before failing the request: the
        # failure lets the next request go, which must find a new one.
        pending = self._takePending()
        self._retire(why)
        if pending is not None:
            pending.errback(Failure(InvalidResponse(why)))

    def inputEnded(self):
        # The target will send nothing more: close, and fail what it owes.
        self.transport.loseConnection()

    def stopReceiving(self, reason):
        pending = self._takePending()
        if pending is not None:
            pending.errback(Failure(TargetLost("the connection to the target closed")))
        self.factory.targetLost(self, reason)
        self.framer = None  # no cycle: freed by reference counting

    def _abandon(self, pending):
        # Whoever asked gave up (its deadline): the answer may still come,
        # and must reach no one.
        if self.pending is pending:
            self._takePending()
            self._retire("gave up waiting for the response")
            pending.errback(Failure(TargetTimeout("no response from the target")))

    def _retire(self, why):
        """
        Take this connection out of service and renew it: nothing it
        delivers from now on reaches anyone.
        """
        if not self.retired:
            self.retired = True
            self.factory.renew(self, why)

    def _takePending(self):
        pending, self.pending, self._partReceived = self.pending, None, None
        return pending
