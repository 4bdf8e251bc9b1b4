# -*- test-case-name: tests.test_concurrency -*-
"""
Round trips matched by id, one or more in flight on one target connection.

For application protocols whose responses name the request they answer
(Modbus TCP's transaction id), through their L{IPipelining}: each request
is rewritten with an id unique on the connection, and each response is
matched by that id and given back its client's own id. Used for such
protocols always, so that a late or repeated answer is recognised by its id;
with C{--pipeline K}, K requests are in flight at once.
"""

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpmux.errors import InvalidResponse, TargetLost, TargetTimeout
from tcpmux.interfaces import IResponseReceiver
from tcpmux.target.session import ConnectionReceiver
from tcpmux.writing import writeNow

ID_SPACE = 0x10000


@implementer(IResponseReceiver)
class PipelinedTargetSession(ConnectionReceiver):
    """
    The receiver of a target connection carrying up to C{capacity} round
    trips at once. When a round trip is abandoned the connection is
    renewed, failing the others on it, since a late answer could otherwise
    meet a reused id. A response with an id given out before is a late or
    repeated answer, and dropped; one with an id never given out means the
    target is out of step: the round trips on it fail at once with
    L{InvalidResponse}, and the connection is renewed. With one round trip
    at a time, bytes after an answer in the same read renew the connection
    too, as in L{tcpmux.target.session.TargetSession}; with several in
    flight they may be the other answers, and responses are matched by id
    alone.

    @ivar inFlight: wire id -> (round trip's L{Deferred}, request).
    """

    _wrapped = False

    def __init__(self, factory, pipelining, capacity):
        self.factory = factory
        self.pipelining = pipelining
        self.capacity = capacity
        self.inFlight = {}
        self._lastId = 0

    @property
    def busy(self):
        return bool(self.inFlight)

    def roundTrip(self, request, partReceived=None):
        wireId = self._lastId + 1
        if wireId == ID_SPACE or wireId in self.inFlight:
            # (Almost always the next id is free: the search is the rare case.)
            wireId = self._allocate()
        else:
            self._lastId = wireId
        response = Deferred(canceller=self._abandon)
        self.inFlight[wireId] = (response, request)
        writeNow(self.transport, self.pipelining.requestWithId(request, wireId))
        return response

    def _allocate(self):
        # At most capacity (< ID_SPACE) ids are in use, so one is free.
        wireId = self._lastId
        while True:
            wireId = (wireId + 1) % ID_SPACE
            if wireId == 0:
                self._wrapped = True
            if wireId not in self.inFlight:
                self._lastId = wireId
                return wireId

    # IResponseReceiver

    def messageReceived(self, response):
        if self.retired:
            self._droppedWhileRetired()
            return
        wireId = self.pipelining.responseId(response)
        entry = self.inFlight.pop(wireId, None)
        if entry is not None:
            pending, request = entry
            if self.capacity == 1 and self.framer.buffered():
                # Bytes after the answer, in the same read: one request at a
                # time, so nothing asked for them. (They could even carry
                # the id the next request is about to get.)
                self._countBytesAfterAnswer()
                self._renew("unrequested bytes after a response")
            self.answered = True
            pending.callback(self.pipelining.responseFor(response, request))
        elif self._issued(wireId):
            # A late or repeated answer to a request already answered or
            # given up on: recognised by its id, and dropped.
            self.factory.surplus(self, f"a response with the old id {wireId}")
        else:
            # An id never used here: the target is out of step with its
            # requests, and whatever it sends next cannot be trusted.
            why = f"a response with id {wireId}, which no request carried"
            self.factory.droppedResponses += 1
            self._renew(why, error=InvalidResponse(why))

    def _issued(self, wireId):
        """
        Whether C{wireId} was given to a request on this connection.
        """
        return self._wrapped or 0 < wireId <= self._lastId

    def partReceived(self, part):
        # Protocols with parts (HTTP) are not pipelined.
        pass

    def framingError(self, reason, reply):
        why = f"unframeable response: {reason}"
        self._renew(why, error=InvalidResponse(why))

    def stopReceiving(self, reason):
        inFlight, self.inFlight = self.inFlight, {}
        self._failAll(inFlight, TargetLost("the connection to the target closed"))
        self._lost(reason)

    def _abandon(self, response):
        # Whoever asked gave up on this answer: it may still come, with an
        # id that could be reused, so the connection goes. (Its id is looked
        # up here, on the rare give-up, rather than kept in a closure made
        # for every round trip.)
        for wireId, (pending, _) in self.inFlight.items():
            if pending is response:
                self._renew(
                    "gave up waiting for a response",
                    wireId,
                    TargetTimeout("no response from the target"),
                )
                return

    def _renew(self, why, wireId=None, error=None):
        """
        Stop offering this connection and drop it, then fail the round trips
        that were on it: C{wireId}'s with C{error}, and every other one with
        C{error} or, when C{wireId} is given, L{TargetLost}. The connection
        goes first, so that no failure lets another request onto it.
        """
        inFlight, self.inFlight = self.inFlight, {}
        own = inFlight.pop(wireId, None)
        self.retired = True
        self.factory.renew(self, why)
        if own is not None:
            own[0].errback(Failure(error))
        if wireId is not None:
            error = TargetLost(f"the connection was renewed: {why}")
        self._failAll(inFlight, error)

    def _failAll(self, inFlight, error):
        for pending, request in inFlight.values():
            pending.errback(Failure(error))
