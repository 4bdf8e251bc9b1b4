# -*- test-case-name: tests.test_multiplexer -*-
"""
The multiplexer: many clients, one round trip at a time to one target.

A L{Multiplexer} is the server factory of one listener and owns the
L{DeferredLock} that serializes round trips to its target. It knows nothing
about any application protocol: framing is the job of the receivers that an
L{tcpmux.framing.ApplicationProtocol} supplies, and the target is anything
with C{roundTrip}, C{start} and C{stop} (L{tcpmux.target.TargetClientFactory}).
"""

import time
from collections import deque

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredLock,
    DeferredSemaphore,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpmux.errors import GatewayError, TargetTimeout, TargetUnavailable
from tcpmux.writing import noDelay, writeNow


def formatAddress(address):
    """
    C{host:port} for an IP address, the path for a UNIX one.
    """
    host = getattr(address, "host", None)
    if host is None:
        return getattr(address, "name", None) or str(address)
    if ":" in host:
        return f"[{host}]:{address.port}"
    return f"{host}:{address.port}"


class RepeatedFailures:
    """
    Logs failed requests without flooding: the first failure of a kind is
    logged at once; the same failure again within C{window} seconds is
    counted, and the count logged once when the window ends. (A device that
    is down, polled by fifty clients, would otherwise write thousands of
    identical lines a second.)
    """

    def __init__(self, log, clock, window=10.0):
        self.log = log
        self.clock = clock
        self.window = window
        self._windows = {}

    def failed(self, client, error):
        key = (type(error), str(error))
        window = self._windows.get(key)
        if window is not None:
            window[1] += 1
            return
        self.log.warn(
            "Request from {client} failed: {error}", client=client, error=error
        )
        call = self.clock.callLater(self.window, self._flush, key)
        self._windows[key] = [call, 0, error]

    def _flush(self, key):
        call, count, error = self._windows.pop(key)
        if count:
            self.log.warn(
                "{count} more requests failed the same way in the last "
                "{window}s: {error}",
                count=count,
                window=self.window,
                error=error,
            )

    def flushAll(self):
        """
        Log what is still counted, now (tcpmux is stopping).
        """
        for key in list(self._windows):
            call = self._windows[key][0]
            if call.active():
                call.cancel()
            self._flush(key)


@implementer(IPushProducer)
class ClientSession:
    """
    Mixed into an application protocol's request receiver: one connected
    client.

    Whole requests wait in C{requests}; at most one of them is queued for
    the target at a time, so that requests from one client are answered in
    order and clients take turns. The session is the producer for its own
    transport, so a client that does not read its answers stops having its
    requests sent, and then stops being read.
    """

    log = Logger()
    lastWords = None
    writePaused = False
    readPaused = False
    gone = False
    # The round trip of this client's request now queued or in flight.
    pending = None
    inFlight = False
    expired = None
    submittedAt = sentAt = 0.0
    idleCall = None
    lastActive = 0.0
    received = 0
    framed = 0

    @property
    def busy(self):
        """
        Whether one of this client's requests is queued for the target or
        in flight.
        """
        return self.pending is not None

    def connectionMade(self):
        self.requests = deque()
        self.peer = formatAddress(self.transport.getPeer())
        noDelay(self.transport)
        self.transport.registerProducer(self, True)
        self.factory.clientConnected(self)

    def dataReceived(self, data):
        self.received += len(data)
        if self.factory.clientTimeout:
            self.lastActive = self.factory.clock.seconds()
        super().dataReceived(data)

    def messageReceived(self, request):
        self.framed += len(request)
        self.factory.requestReceived(self, request)

    def framingError(self, reason, reply=None):
        self.log.warn(
            "Closing client {client}: {reason}", client=self.peer, reason=reason
        )
        if self.busy or self.requests:
            # Whole requests that came before the bad bytes are answered
            # first, in order; then the reply (an HTTP 400, say) and close.
            self.lastWords = reply or b""
            self.transport.pauseProducing()
            return
        if reply:
            self.transport.write(reply)
        self.transport.loseConnection()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.gone = True
        self.requests.clear()
        if self.idleCall is not None and self.idleCall.active():
            self.idleCall.cancel()
        self.idleCall = None
        if self.pending is not None and not self.inFlight:
            # Waiting for its turn: it is never sent.
            self.pending.cancel()
        self.factory.clientDisconnected(self, reason)

    # IPushProducer, for our own transport's write buffer.

    def pauseProducing(self):
        self.writePaused = True

    def resumeProducing(self):
        self.writePaused = False
        self.factory.clientReady(self)

    def stopProducing(self):
        pass


class Multiplexer(ServerFactory):
    """
    Server factory for one listener; carries its clients' requests, one
    round trip at a time, to one target.

    @ivar application: the L{tcpmux.framing.ApplicationProtocol}.
    @ivar target: the L{tcpmux.target.TargetClientFactory}.
    @ivar maxQueue: whole requests one client may have waiting before
        tcpmux stops reading from it.
    @ivar maxClients: clients connected at once; more are closed at once.
    @ivar timeout: seconds a client waits for the answer to a request, from
        the moment the request is its next one to go (waiting for other
        clients' round trips, for a connection, and for the target's answer
        all count); then it gets an error. L{None}: only the target's own
        timeout applies.
    @ivar clientTimeout: close a client that sent nothing and had nothing
        in progress for this many seconds; L{None}: never.
    @ivar idleClose: release the target connection when no client has
        been connected for this many seconds; L{None}: keep it.
    """

    log = Logger()
    noisy = False  # we log client connects ourselves, with counts
    stopping = False
    _allGone = None

    def __init__(
        self,
        application,
        target,
        maxQueue=32,
        maxClients=1024,
        verbose=False,
        timeout=None,
        clientTimeout=None,
        idleClose=None,
        clock=None,
    ):
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.timeout = timeout
        self.clientTimeout = clientTimeout
        self.idleClose = idleClose
        self._idleCall = None
        self.application = application
        self.target = target
        self.maxQueue = maxQueue
        self.maxClients = maxClients
        self.verbose = verbose
        # One round trip at a time, or as many as the target can carry at
        # once (--connections, --pipeline).
        self.concurrency = getattr(target, "concurrency", 1)
        if self.concurrency == 1:
            self.lock = DeferredLock()
        else:
            self.lock = DeferredSemaphore(self.concurrency)
        self.failures = RepeatedFailures(self.log, self.clock)
        self.clients = set()
        self.protocol = type(
            "ClientConnection", (ClientSession, application.requestReceiver), {}
        )

    def buildProtocol(self, addr):
        if len(self.clients) >= self.maxClients:
            self.log.warn(
                "Refusing client {client}: {count} clients already connected "
                "(--max-clients)",
                client=formatAddress(addr),
                count=len(self.clients),
            )
            return None
        return ServerFactory.buildProtocol(self, addr)

    # -- called by the client sessions

    def clientConnected(self, client):
        self.clients.add(client)
        self.log.info(
            "Client {client} connected ({count} now)",
            client=client.peer,
            count=len(self.clients),
        )
        if self._idleCall is not None:
            released = not self._idleCall.active()
            if not released:
                self._idleCall.cancel()
            self._idleCall = None
            if released and not self.stopping:
                # --idle-close released it: open it again now.
                self.target.start()
        if self.clientTimeout:
            client.lastActive = self.clock.seconds()
            client.idleCall = self.clock.callLater(
                self.clientTimeout, self._checkIdle, client
            )

    def clientDisconnected(self, client, reason):
        self.clients.discard(client)
        incomplete = client.received - client.framed
        if incomplete > 0 and not client.transport.disconnecting:
            self.log.warn(
                "Client {client} disconnected ({count} now) in the middle of "
                "a request: {size} bytes discarded",
                client=client.peer,
                count=len(self.clients),
                size=incomplete,
            )
        else:
            self.log.info(
                "Client {client} disconnected ({count} now)",
                client=client.peer,
                count=len(self.clients),
            )
        if not self.clients:
            self._scheduleIdleClose()
            if self._allGone is not None:
                gone, self._allGone = self._allGone, None
                gone.callback(None)

    def _scheduleIdleClose(self):
        if self.idleClose and not self.stopping and self._idleCall is None:
            self._idleCall = self.clock.callLater(self.idleClose, self._idleClosed)

    def _idleClosed(self):
        # self._idleCall stays set (inactive): the next client re-opens.
        self.log.info(
            "No client for {idle}s: releasing the connection to target "
            "{target} (--idle-close)",
            idle=self.idleClose,
            target=getattr(self.target, "name", self.target),
        )
        self.target.release()

    def _checkIdle(self, client):
        client.idleCall = None
        if client.gone:
            return
        quiet = self.clock.seconds() - client.lastActive
        if client.busy or client.requests:
            # Waiting for an answer is not idleness: look again later.
            again = self.clientTimeout
        elif quiet < self.clientTimeout:
            again = self.clientTimeout - quiet
        else:
            again = None
        if again is not None:
            client.idleCall = self.clock.callLater(again, self._checkIdle, client)
            return
        self.log.warn(
            "Closing client {client}: idle for {idle}s (--client-timeout)",
            client=client.peer,
            idle=self.clientTimeout,
        )
        client.transport.loseConnection()

    def requestReceived(self, client, request):
        if self.verbose:
            self._dump("request from", client, request)
        client.requests.append(request)
        if not client.busy and not client.writePaused:
            self._submit(client)
        if len(client.requests) >= self.maxQueue and not client.readPaused:
            client.readPaused = True
            client.transport.pauseProducing()

    def clientReady(self, client):
        """
        C{client} can take answers again: send its next request, if any.
        """
        if client.requests and not client.busy and not client.gone:
            self._submit(client)

    # -- the round trip

    def _submit(self, client):
        request = client.requests.popleft()
        if client.readPaused and len(client.requests) < self.maxQueue:
            client.readPaused = False
            client.transport.resumeProducing()
        if self.stopping:
            self._answered(
                fail(TargetUnavailable("tcpmux is stopping")), client, request
            )
            return
        # The answer is delivered after the lock is released, so the next
        # client's request is already on its way to the target while this
        # answer is written.
        client.expired = None
        client.submittedAt = self.clock.seconds()
        client.pending = pending = self.lock.run(self._send, client, request)
        if self.timeout:
            deadline = self.clock.callLater(
                self.timeout, self._expire, client, pending
            )
            pending.addBoth(self._cancelDeadline, deadline)
        pending.addBoth(self._answered, client, request)

    def _cancelDeadline(self, result, deadline):
        if deadline.active():
            deadline.cancel()
        return result

    def _expire(self, client, pending):
        """
        C{client} has waited C{timeout} for its answer: give up on it, and
        never send its request if it has not gone yet.
        """
        now = self.clock.seconds()
        if not client.inFlight:
            client.expired = TargetTimeout(
                f"no answer within {self.timeout}s: still waiting for its "
                "turn, not sent"
            )
        elif getattr(self.target, "connection", True) is None and (
            now - client.sentAt > client.sentAt - client.submittedAt
        ):
            # Most of its time went waiting for a connection.
            client.expired = TargetUnavailable(
                f"no connection to the target within {self.timeout}s"
            )
        else:
            client.expired = TargetTimeout(
                f"no response from the target within {self.timeout}s"
            )
        pending.cancel()

    def _send(self, client, request):
        if client.gone:
            # Never send a request whose client can no longer be answered.
            return succeed(None)
        if self.stopping:
            return fail(TargetUnavailable("tcpmux is stopping"))
        client.inFlight = True
        client.sentAt = self.clock.seconds()
        if self.verbose:
            client.started = time.monotonic()
        deadline = client.submittedAt + self.timeout if self.timeout else None
        return self.target.roundTrip(request, client.transport.write, deadline)

    def _answered(self, response, client, request):
        client.inFlight = False
        client.pending = None
        if self.clientTimeout:
            client.lastActive = self.clock.seconds()
        if client.gone:
            if response is not None and self.verbose:
                self.log.debug(
                    "Dropped the answer for departed client {client}",
                    client=client.peer,
                )
            return
        if not isinstance(response, bytes):
            if response.check(CancelledError) and client.expired is not None:
                response = Failure(client.expired)
            client.expired = None
            error = response.value
            if response.check(GatewayError):
                self.failures.failed(client.peer, error)
            else:
                self.log.failure(
                    "Request from {client} failed", response, client=client.peer
                )
            reply = self.application.errorResponse(request, error)
            if reply is None:
                client.transport.loseConnection()
                return
            response = reply
        elif self.verbose:
            self._dump("response to", client, response)
        writeNow(client.transport, response)
        if self.application.closesClient(request, response):
            client.requests.clear()
            client.transport.loseConnection()
        elif client.requests:
            if not client.writePaused:
                self._submit(client)
        elif client.lastWords is not None:
            client.transport.write(client.lastWords)
            client.transport.loseConnection()

    def _dump(self, what, client, message):
        timing = ""
        started = getattr(client, "started", None)
        if what == "response to" and started is not None:
            timing = f" after {1000 * (time.monotonic() - started):.1f} ms"
        self.log.debug(
            "{what} {client}{timing}: {size} bytes {summary} {hex}",
            what=what,
            client=client.peer,
            timing=timing,
            size=len(message),
            summary=self.application.describe(message),
            hex=message.hex(" "),
        )

    # -- lifecycle

    def start(self):
        """
        Open the target connection now, eagerly, so that a device's one
        connection slot is held before the first client arrives.
        """
        self.target.start()
        if not self.clients:
            self._scheduleIdleClose()
            if self._allGone is not None:
                gone, self._allGone = self._allGone, None
                gone.callback(None)

    def stop(self, timeout, clock):
        """
        Finish (or fail, after C{timeout}) the round trip in flight, then
        close the target connection and every client.
        """
        # Requests still queued fail at once instead of being sent.
        self.stopping = True
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.cancel()
        self._idleCall = None
        # Every slot of the lock or semaphore: no round trip in flight.
        drained = gatherResults(
            [self.lock.acquire() for _ in range(self.concurrency)]
        )
        drained.addTimeout(timeout, clock)
        drained.addErrback(lambda failure: None)
        # Closing the target fails a round trip still in flight, so its
        # client gets its error before it is closed.
        drained.addCallback(lambda ignored: self.target.stop())

        def closeClients(ignored):
            # Wait until every client is really gone, so that answers and
            # errors already written are flushed before the reactor stops
            # (and drops whatever is still buffered).
            if not self.clients:
                return None
            self._allGone = gone = Deferred()
            for client in list(self.clients):
                client.requests.clear()
                client.transport.loseConnection()

            def abort(failure):
                for client in list(self.clients):
                    client.transport.abortConnection()

            return gone.addTimeout(timeout, clock).addErrback(abort)

        def flush(result):
            self.failures.flushAll()
            return result

        return drained.addCallback(closeClients).addBoth(flush)
