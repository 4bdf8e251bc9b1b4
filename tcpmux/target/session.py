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


class ConnectionReceiver:
    """
    What every target session does with its connection, whether it carries
    one round trip at a time or several matched by id.

    @ivar framer: the response framer this session receives from.
    @ivar retired: whether the connection was taken out of service; what it
        delivers from then on reaches no one.
    @ivar answered: whether it answered a request: then it was no failed
        attempt, whenever it closes (a device that accepts and closes at
        once answers nothing).
    """

    log = Logger()
    framer = None
    transport = None
    retired = False
    answered = False
    # Whether the bytes after an answer were counted as dropped already.
    _trailingCounted = False

    def startReceiving(self, framer):
        self.framer = framer
        self.transport = framer.transport
        noDelay(self.transport)
        self.factory.targetConnected(self)

    def inputEnded(self):
        # The target will send nothing more: close, and fail what it owes.
        self.transport.loseConnection()

    def _droppedWhileRetired(self):
        """
        A message from a retired connection reaches no one: count it, unless
        it was counted as the bytes after an answer.
        """
        if self._trailingCounted:
            self._trailingCounted = False
        else:
            self.factory.droppedResponses += 1

    def _countBytesAfterAnswer(self):
        """
        More bytes came after the answer being delivered, in the same read
        (the framer has them buffered; nothing asked for them): count them
        as dropped, once.
        """
        self.factory.droppedResponses += 1
        self._trailingCounted = True

    def _lost(self, reason):
        self.factory.targetLost(self, reason)
        self.framer = None  # no cycle: freed by reference counting


@implementer(IResponseReceiver)
class TargetSession(ConnectionReceiver):
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

    @ivar pending: the round trip in flight, or L{None}.
    """

    pending = None
    _partReceived = None

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

    def messageReceived(self, response):
        if self.retired:
            self._droppedWhileRetired()
            return
        pending = self._takePending()
        if pending is None:
            # Nothing was asked: a duplicate, or bytes the target pushed.
            # The connection may no longer be in step with its requests.
            self.factory.droppedResponses += 1
            self._retire("a response that answers no request")
            return
        if self.framer.buffered():
            # The answer goes to its client, and the next request to a new
            # connection.
            self._countBytesAfterAnswer()
            self._retire("unrequested bytes after a response")
        self.answered = True
        pending.callback(response)

    def partReceived(self, part):
        if self.retired:
            return
        if self.pending is None:
            self.factory.droppedResponses += 1
            self._retire("part of a response that answers no request")
            return
        self.answered = True
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

    def stopReceiving(self, reason):
        pending = self._takePending()
        if pending is not None:
            pending.errback(Failure(TargetLost("the connection to the target closed")))
        self._lost(reason)

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
