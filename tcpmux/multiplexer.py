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

from twisted.internet.defer import DeferredLock, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

from tcpmux.errors import GatewayError, TargetUnavailable


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
    busy = False
    writePaused = False
    readPaused = False
    gone = False

    def connectionMade(self):
        self.requests = deque()
        self.peer = formatAddress(self.transport.getPeer())
        self.transport.registerProducer(self, True)
        self.factory.clientConnected(self)

    def messageReceived(self, request):
        self.factory.requestReceived(self, request)

    def framingError(self, reason, reply=None):
        self.log.warn(
            "Closing client {client}: {reason}", client=self.peer, reason=reason
        )
        if reply:
            self.transport.write(reply)
        self.transport.loseConnection()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.gone = True
        self.requests.clear()
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
    """

    log = Logger()
    noisy = False  # we log client connects ourselves, with counts
    stopping = False

    def __init__(
        self, application, target, maxQueue=32, maxClients=1024, verbose=False
    ):
        self.application = application
        self.target = target
        self.maxQueue = maxQueue
        self.maxClients = maxClients
        self.verbose = verbose
        self.lock = DeferredLock()
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

    def clientDisconnected(self, client, reason):
        self.clients.discard(client)
        self.log.info(
            "Client {client} disconnected ({count} now)",
            client=client.peer,
            count=len(self.clients),
        )

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
        client.busy = True
        # The answer is delivered after the lock is released, so the next
        # client's request is already on its way to the target while this
        # answer is written.
        self.lock.run(self._send, client, request).addBoth(
            self._answered, client, request
        )

    def _send(self, client, request):
        if client.gone:
            # Never send a request whose client can no longer be answered.
            return succeed(None)
        if self.stopping:
            return fail(TargetUnavailable("tcpmux is stopping"))
        if self.verbose:
            client.started = time.monotonic()
            return self.target.roundTrip(request, client.transport.write)
        return self.target.roundTrip(request, client.transport.write)

    def _answered(self, response, client, request):
        client.busy = False
        if client.gone:
            if response is not None and self.verbose:
                self.log.debug(
                    "Dropped the answer for departed client {client}",
                    client=client.peer,
                )
            return
        if not isinstance(response, bytes):
            error = response.value
            if response.check(GatewayError):
                self.log.warn(
                    "Request from {client} failed: {error}",
                    client=client.peer,
                    error=error,
                )
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
        client.transport.write(response)
        if self.application.closesClient(request, response):
            client.requests.clear()
            client.transport.loseConnection()
        elif client.requests and not client.writePaused:
            self._submit(client)

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
        self.target.start()

    def stop(self, timeout, clock):
        """
        Finish (or fail, after C{timeout}) the round trip in flight, then
        close every client and the target connection.
        """
        # Requests still queued fail at once instead of being sent.
        self.stopping = True
        drained = self.lock.acquire()
        drained.addTimeout(timeout, clock)
        drained.addErrback(lambda failure: None)

        def closeAll(ignored):
            for client in list(self.clients):
                client.requests.clear()
                client.transport.loseConnection()
            return self.target.stop()

        return drained.addCallback(closeAll)
