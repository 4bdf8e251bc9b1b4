"""
Yardsticks for tcpmux's Modbus figures (C{bench.py}): the barest proxy
Twisted can be, run as tcpmux is (C{twistd -n floor-proxy --port N
--target PORT}, through twistd's plugin scan). Found on
C{PYTHONPATH=benchmarks/floor} only: it is not part of tcpmux, and it is no
proxy anyone should use.

It carries Modbus TCP requests from many clients over one target
connection, one at a time, in the order they came, and nothing more: no
transaction ids rewritten (an answer goes to whoever asked last), no
deadlines, no flow control, no reconnection, no checks of what the target
sends. It does what tcpmux does to be fast: it writes to the socket at once
when nothing is buffered, turns Nagle off, and keeps the reactor polling
(a C{callLater(0)} kept pending) while an answer is due.

With C{--deferred} it has the skeleton of tcpmux's design: each round trip
takes its turn from a L{DeferredLock} and its answer fires a L{Deferred},
whose callbacks let the next one go, then write the answer to its client.
"""

from collections import deque

from zope.interface import implementer

from twisted.application.service import IServiceMaker, Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.plugin import IPlugin
from twisted.python import usage

MBAP_HEADER = 6


def sendNow(transport, data):
    """
    Write C{data}: to the socket at once if the transport holds nothing
    back (as C{tcpmux.writing.writeNow} does), else as Twisted writes.
    """
    if not transport.dataBuffer and not transport._tempDataBuffer:
        sent = transport.socket.send(data)
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class MBAPFrames(Protocol):
    """
    Cuts Modbus TCP frames (a 6-byte MBAP header whose last two bytes count
    the bytes after it) and hands each whole one to L{frameReceived}.
    """

    _buffer = b""

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        data = self._buffer + data if self._buffer else data
        while len(data) >= MBAP_HEADER:
            size = MBAP_HEADER + (data[4] << 8 | data[5])
            if len(data) < size:
                break
            frame, data = (data, b"") if size == len(data) else (data[:size], data[size:])
            self.frameReceived(frame)
        self._buffer = data


class Client(MBAPFrames):
    def frameReceived(self, frame):
        self.factory.mux.submit(self, frame)


class Target(MBAPFrames):
    def connectionMade(self):
        MBAPFrames.connectionMade(self)
        self.factory.mux.target = self

    def frameReceived(self, frame):
        self.factory.mux.answered(frame)


class Poller:
    """
    Keeps the reactor turning without sleeping while C{due()} is true.
    """

    def __init__(self, due):
        self.due = due
        self.call = None

    def start(self):
        if self.call is None:
            self.call = reactor.callLater(0, self._poll)

    def _poll(self):
        self.call = None
        if self.due():
            self.start()


class Mux:
    """
    Requests in a queue, one in flight; its answer goes to whoever sent it.
    """

    def __init__(self):
        self.target = None
        self.waiting = deque()
        self.asker = None
        self.poller = Poller(lambda: self.asker is not None)

    def submit(self, client, frame):
        self.waiting.append((client, frame))
        if self.asker is None:
            self._next()

    def _next(self):
        if self.waiting:
            self.asker, frame = self.waiting.popleft()
            sendNow(self.target.transport, frame)
            self.poller.start()
        else:
            self.asker = None

    def answered(self, frame):
        asker = self.asker
        self._next()
        sendNow(asker.transport, frame)


class DeferredMux:
    """
    L{Mux} on the skeleton of tcpmux's design: a L{DeferredLock} turn and a
    L{Deferred} answer per round trip.
    """

    def __init__(self):
        self.target = None
        self.lock = DeferredLock()
        self.pending = None
        self.poller = Poller(lambda: self.pending is not None)

    def submit(self, client, frame):
        turn = self.lock.acquire()
        turn.addCallback(self._send, frame)
        turn.addCallback(self._deliver, client)

    def _send(self, lock, frame):
        self.pending = Deferred()
        sendNow(self.target.transport, frame)
        self.poller.start()
        return self.pending.addBoth(self._finished)

    def _finished(self, answer):
        # The next round trip goes before this answer is written.
        self.lock.release()
        return answer

    def _deliver(self, answer, client):
        sendNow(client.transport, answer)

    def answered(self, frame):
        pending, self.pending = self.pending, None
        pending.callback(frame)


class Options(usage.Options):
    optParameters = [
        ["port", None, None, "the port to listen on, at 127.0.0.1"],
        ["target", None, None, "the target's port, at 127.0.0.1"],
    ]
    optFlags = [["deferred", None, "a DeferredLock and a Deferred per round trip"]]


class Listener(Service):
    """
    Listens once the target is connected (a client's first request finds
    it there).
    """

    def __init__(self, options):
        self.options = options
        self.mux = DeferredMux() if options["deferred"] else Mux()

    def startService(self):
        Service.startService(self)
        targetFactory = Factory.forProtocol(Target)
        targetFactory.mux = self.mux
        clientFactory = Factory.forProtocol(Client)
        clientFactory.mux = self.mux
        target = clientFromString(reactor, f"tcp:127.0.0.1:{self.options['target']}")
        listen = serverFromString(
            reactor, f"tcp:{self.options['port']}:interface=127.0.0.1:backlog=1024"
        )
        target.connect(targetFactory).addCallback(lambda _: listen.listen(clientFactory))


@implementer(IServiceMaker, IPlugin)
class FloorProxy:
    tapname = "floor-proxy"
    description = "The barest Twisted Modbus proxy: a yardstick for tcpmux's figures"
    options = Options

    def makeService(self, options):
        return Listener(options)


floorProxy = FloorProxy()
