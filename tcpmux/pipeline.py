# -*- test-case-name: tests.test_concurrency -*-
"""
More than one round trip in flight on one target connection.

Only for application protocols whose responses name the request they
answer (Modbus TCP's transaction id): each request is rewritten with an id
unique on the connection, and each response is matched by that id and given
back its client's own id. The protocol provides this through
C{ApplicationProtocol.pipelining}, an object with:

  - C{responseReceiver}: a framer for responses that passes every one on;
  - C{requestWithId(request, wireId)}: the request carrying C{wireId};
  - C{responseId(response)}: the id a response carries;
  - C{responseFor(response, request)}: the response as C{request}'s client
    must see it (its own id back).
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpmux.errors import TargetLost, TargetProtocolError, TargetTimeout
from tcpmux.writing import noDelay, writeNow

ID_SPACE = 0x10000


class PipelinedTargetSession:
    """
    Mixed into the protocol's pipelining response receiver: the protocol of
    a connection carrying up to C{factory.capacity} round trips at once.
    After a timeout the connection is renewed, failing the other round
    trips on it, since a late answer could otherwise meet a reused id.
    """

    log = Logger()

    def connectionMade(self):
        self.inFlight = {}
        self._lastId = 0
        self.pipelining = self.factory.application.pipelining
        noDelay(self.transport)
        self.factory.targetConnected(self)

    @property
    def pending(self):
        return self.inFlight or None

    def roundTrip(self, request, interim=None):
        wireId = self._allocate()
        response = Deferred(canceller=lambda d: self._abandon(wireId))
        timer = None
        if self.factory.responseTimeout:
            timer = self.factory.clock.callLater(
                self.factory.responseTimeout, self._timedOut, wireId
            )
        self.inFlight[wireId] = (response, request, timer)
        writeNow(self.transport, self.pipelining.requestWithId(request, wireId))
        return response

    def _allocate(self):
        wireId = self._lastId
        for _ in range(ID_SPACE):
            wireId = (wireId + 1) % ID_SPACE
            if wireId not in self.inFlight:
                self._lastId = wireId
                return wireId
        raise RuntimeError("no free transaction id")  # capacity < 65536

    def messageReceived(self, response):
        entry = self.inFlight.pop(self.pipelining.responseId(response), None)
        if entry is None:
            self.log.warn(
                "Dropped a response from {target} that answers no request in "
                "flight (id {id})",
                target=self.factory.name,
                id=self.pipelining.responseId(response),
            )
            return
        pending, request, timer = entry
        if timer is not None:
            timer.cancel()
        pending.callback(self.pipelining.responseFor(response, request))

    def interimReceived(self, message):
        # Protocols with interim responses (HTTP) are not pipelined.
        pass

    def _timedOut(self, wireId):
        if wireId in self.inFlight:
            why = f"no response within {self.factory.responseTimeout}s"
            self._renew(why, wireId, TargetTimeout(why))

    def _abandon(self, wireId):
        # Whoever asked gave up on this answer: it may still come, with an
        # id that could be reused, so the connection goes.
        if wireId in self.inFlight:
            self._renew("gave up waiting for a response", wireId)

    def framingError(self, reason, reply=None):
        why = f"unframeable response: {reason}"
        self._renew(why, error=TargetProtocolError(why))

    def _renew(self, why, wireId=None, error=None):
        """
        Stop offering this connection and drop it, then fail the round trips
        that were on it: C{wireId}'s with C{error} (none if its asker gave
        up), every other one with C{error} or, when C{wireId} is given,
        L{TargetLost}. The connection goes first, so that no failure lets
        another request onto it.
        """
        inFlight, self.inFlight = self.inFlight, {}
        own = inFlight.pop(wireId, None)
        self.factory.renew(self, why)
        if own is not None:
            self._fail(own, error)
        if wireId is not None:
            error = TargetLost(f"the connection was renewed: {why}")
        self._failAll(error, inFlight)

    def _fail(self, entry, exception):
        pending, request, timer = entry
        if timer is not None and timer.active():
            timer.cancel()
        if exception is not None:
            pending.errback(Failure(exception))

    def _failAll(self, exception, inFlight=None):
        if inFlight is None:
            inFlight, self.inFlight = self.inFlight, {}
        for entry in inFlight.values():
            self._fail(entry, exception)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self._failAll(TargetLost("the connection to the target closed"))
        self.factory.targetLost(self, reason)
