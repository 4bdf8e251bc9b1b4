"""
Fault injectors and small clients for the fault, lifecycle and load tests:
misbehaving targets as Twisted servers on 127.0.0.1, Modbus, echo and
HTTP clients over real TCP, and a log capture. The Modbus messages themselves
are L{tests.modbus}'s.

The targets here are deliberately simple and independent of tcpmux's own
framers, so that what the tests check is what crosses the wire.
"""

import struct

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.logger import formatEvent, globalLogPublisher

from tests.modbus import readResponse, splitModbus


# -- messages


def splitLines(buffer):
    """
    Whole lines at the start of C{buffer}, and what is left.
    """
    *lines, rest = buffer.split(b"\n")
    return [line + b"\n" for line in lines], rest


def splitHTTP(buffer):
    """
    Whole HTTP/1.1 messages at the start of C{buffer}, and what is left:
    only as much HTTP as these tests' peers speak (a head, then as many
    bytes as its C{Content-Length} says, none without one).
    """
    messages = []
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            break
        length = 0
        for line in buffer[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        size = end + 4 + length
        if len(buffer) < size:
            break
        messages.append(buffer[:size])
        buffer = buffer[size:]
    return messages, buffer


SPLITTERS = {"modbus": splitModbus, "echo": splitLines, "http": splitHTTP}


def answerFor(kind, request):
    """
    What a well-behaved target answers: echo echoes; Modbus answers a read
    with the register's address as its value, so every answer says which
    request it answers.
    """
    if kind == "echo":
        return request
    tid, _, _, unit, function, address = struct.unpack(">HHHBBH", request[:10])
    return readResponse(tid, address, unit)


# -- targets


class FaultTargetProtocol(Protocol):
    """
    One connection to a L{FaultTarget}.
    """
    def connectionMade(self):
        self._buffer = b""
        self.factory.connections.append(self)
        self.factory.accepted += 1
        waiters, self.factory._connectWaiters = self.factory._connectWaiters, []
        for d in waiters:
            d.callback(self)

    def dataReceived(self, data):
        messages, self._buffer = SPLITTERS[self.factory.kind](self._buffer + data)
        for request in messages:
            self.factory.requests.append(request)
            waiters, self.factory._requestWaiters = self.factory._requestWaiters, []
            for d in waiters:
                d.callback(request)
            self.factory.behaviour(self, request)

    def answer(self, request):
        self.transport.write(answerFor(self.factory.kind, request))

    def connectionLost(self, reason):
        if self in self.factory.connections:
            self.factory.connections.remove(self)


class FaultTarget(ServerFactory):
    """
    A target on 127.0.0.1 whose behaviour for each request is
    C{behaviour(connection, request)}; see the module-level behaviours.

    @ivar requests: every request it received, in order.
    @ivar accepted: how many connections it accepted.
    """

    protocol = FaultTargetProtocol
    noisy = False

    def __init__(self, kind, behaviour):
        self.kind = kind
        self.behaviour = behaviour
        self.requests = []
        self.connections = []
        self.accepted = 0
        self.held = []
        self.port = None
        self._requestWaiters = []
        self._connectWaiters = []

    def listen(self, testCase, portNumber=0):
        """
        Listen on 127.0.0.1 until the test ends; return the port number.
        """
        self.port = reactor.listenTCP(portNumber, self, interface="127.0.0.1")
        testCase.addCleanup(self.kill)
        return self.port.getHost().port

    def kill(self):
        """
        Stop listening and drop every connection at once (a crash).
        """
        for connection in list(self.connections):
            connection.transport.abortConnection()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return succeed(None)

    def nextRequest(self):
        """
        A L{Deferred} firing with the next request received.
        """
        d = Deferred()
        self._requestWaiters.append(d)
        return d

    def nextConnection(self):
        """
        A L{Deferred} firing with the next connection accepted.
        """
        d = Deferred()
        self._connectWaiters.append(d)
        return d

    def answerHeld(self):
        """
        Answer every request held so far, on connections still open.
        """
        held, self.held = self.held, []
        for connection, request in held:
            if connection.transport.connected:
                connection.answer(request)


def answer(connection, request):
    """
    Behaviour: answer at once.
    """
    connection.answer(request)


def silent(connection, request):
    """
    Behaviour: never answer.
    """
    pass


def hold(connection, request):
    """
    Behaviour: hold the request until L{FaultTarget.answerHeld}.
    """
    connection.factory.held.append((connection, request))


def answerAndClose(connection, request):
    """
    Behaviour: answer, then close the connection.
    """
    connection.answer(request)
    connection.transport.loseConnection()


# -- clients


class Client(Protocol):
    """
    A client that collects whole messages and can wait for them, and for
    being disconnected.
    """

    def __init__(self, kind):
        self.kind = kind
        self.messages = []
        self._buffer = b""
        self._waiters = []
        self.closed = Deferred()

    def dataReceived(self, data):
        messages, self._buffer = SPLITTERS[self.kind](self._buffer + data)
        self.messages.extend(messages)
        self._wake()

    def _wake(self):
        for count, d in list(self._waiters):
            if len(self.messages) >= count:
                self._waiters.remove((count, d))
                d.callback(self.messages[:count])

    def receive(self, count=None, timeout=10):
        """
        Fire with the first C{count} messages (one more than so far if not
        given), or fail if the connection closes first.
        """
        if count is None:
            count = len(self.messages) + 1
        d = Deferred()
        self._waiters.append((count, d))
        self._wake()
        return d.addTimeout(timeout, reactor)

    def connectionLost(self, reason):
        for count, d in self._waiters:
            d.errback(reason)
        self._waiters = []
        self.closed.callback(None)

    @property
    def localPort(self):
        """
        The client's own port number.
        """
        return self.transport.getHost().port

    def send(self, data):
        """
        Write C{data} to the connection.
        """
        self.transport.write(data)


async def connect(testCase, port, kind="modbus", cleanup=True):
    """
    A L{Client} connected to C{port}; closed when the test ends unless
    C{cleanup} is false (then the caller closes it).
    """
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(lambda: Client(kind))
    )

    def close():
        if not client.closed.called:
            client.transport.abortConnection()
            return client.closed

    if cleanup:
        testCase.addCleanup(close)
    return client


def ask(client, request):
    """
    Send one request now; a L{Deferred} firing with the next message.
    """
    waiting = client.receive()
    client.send(request)
    return waiting.addCallback(lambda messages: messages[-1])


# -- instrumentation


def captureLogs(testCase):
    """
    Collect formatted log lines until the test ends.
    """
    lines = []

    def observer(event):
        text = formatEvent(event)
        if text:
            lines.append(text)

    globalLogPublisher.addObserver(observer)
    testCase.addCleanup(globalLogPublisher.removeObserver, observer)
    return lines


def onCall(obj, name):
    """
    Wrap method C{name} of C{obj}: returns a function that gives a
    L{Deferred} firing with the arguments of the next call.
    """
    original = getattr(obj, name)
    waiters = []

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        pending, waiters[:] = list(waiters), []
        for d in pending:
            d.callback(args)
        return result

    setattr(obj, name, wrapper)

    def nextCall():
        d = Deferred()
        waiters.append(d)
        return d

    return nextCall
