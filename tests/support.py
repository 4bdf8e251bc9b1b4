"""
Helpers shared by the end-to-end tests: a multiplexer listening on an
ephemeral port of 127.0.0.1, example servers and C{twistd} run as child
processes, free ports, and blocking-socket reads.
"""

import os
import selectors
import socket
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater

from tcpmux.tap import Options, makeService

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def childEnvironment():
    """
    The environment for a child Python: this checkout first on its path, so
    the child runs the code under test and finds the twistd plugin.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def freePort():
    """
    A port on 127.0.0.1 that nothing listens on.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def receiveExactly(sock, size):
    """
    Receive exactly C{size} bytes, or fail if the connection closes first.
    """
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def receiveUntilClosed(sock, size=65536):
    """
    Receive until the peer closes the connection; return every byte.
    """
    received = b""
    while True:
        chunk = sock.recv(size)
        if not chunk:
            return received
        received += chunk


def buildMultiplexer(*args):
    """
    The multiplexer C{twistd tcpmux} would build from the options C{args}.
    """
    options = Options()
    options.parseOptions(list(args))
    return makeService(options).multiplexer


async def startMultiplexer(testCase, protocol, target, *extraArgs):
    """
    Build the service C{twistd tcpmux} would, from the same options, and
    run its multiplexer on an ephemeral port of 127.0.0.1 until the test
    ends.

    @param target: a port number on 127.0.0.1, or any C{--target} value.
    @return: C{(port, multiplexer)}.
    """
    if isinstance(target, int):
        target = f"127.0.0.1:{target}"
    multiplexer = buildMultiplexer("--protocol", protocol, "--target", target, *extraArgs)
    multiplexer.start()
    listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        multiplexer
    )

    async def stop():
        await listening.stopListening()
        await multiplexer.stop(1.0)

    testCase.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    return listening.getHost().port, multiplexer


class ChildProcess(ProcessProtocol):
    """
    A child process whose output lines are collected, and which can be
    waited on for a line containing some text.
    """

    def __init__(self):
        self.lines = []
        self._partial = b""
        self._watchers = []
        self.ended = Deferred()

    def outReceived(self, data):
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip("\r")
            self.lines.append(text)
            for watcher in list(self._watchers):
                text_, d = watcher
                if text_ in text:
                    self._watchers.remove(watcher)
                    d.callback(text)

    errReceived = outReceived

    def waitFor(self, text, timeout=15):
        """
        Fire with the first line, already seen or yet to come, containing
        C{text}.
        """
        for line in self.lines:
            if text in line:
                d = Deferred()
                d.callback(line)
                return d
        d = Deferred()
        self._watchers.append((text, d))
        return d.addTimeout(timeout, reactor)

    def count(self, text):
        """
        How many lines seen so far contain C{text}.
        """
        return sum(text in line for line in self.lines)

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)

    def signal(self, name="TERM"):
        """
        Send the child signal C{name}, unless it is already gone.
        """
        try:
            self.transport.signalProcess(name)
        except Exception:
            pass


def spawnChild(testCase, executable, *args):
    """
    Run C{executable} with C{args} as a L{ChildProcess}, killed when the
    test ends if it is still running.
    """
    child = ChildProcess()
    reactor.spawnProcess(
        child, executable, [executable, *args], env=childEnvironment(), path=ROOT
    )

    def cleanup():
        if not child.ended.called:
            child.signal("KILL")
            return child.ended

    testCase.addCleanup(cleanup)
    return child


def runTwistd(testCase, *args):
    """
    Run C{twistd} with C{args} as a L{ChildProcess} until the test ends.
    """
    return spawnChild(testCase, TWISTD, *args)


async def runExample(testCase, script, *args, ready="listening on"):
    """
    Run C{examples/script} with C{args} until the test ends; wait for its
    C{ready} line, which must end with C{:port}.

    @return: C{(child, port)}.
    """
    child = spawnChild(testCase, sys.executable, os.path.join(EXAMPLES, script), *args)
    line = await child.waitFor(ready)
    return child, int(line.rsplit(":", 1)[1])


async def killed(child):
    """
    Kill C{child} and wait until it is gone.
    """
    child.signal("KILL")
    await child.ended


async def until(condition, timeout=10):
    """
    Wait, a reactor turn at a time, until C{condition()} is true: for states
    that no event announces.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        await deferLater(reactor, 0.005)


def somaxconn():
    """
    The kernel's cap on any listen backlog.
    """
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


def handshakes(testCase, port, count):
    """
    Connect C{count} clients to C{port} while the listener accepts none (its
    reactor, which this runs in, is busy): the kernel completes only as many
    TCP handshakes as the listen backlog has room for. The clients are
    closed when C{testCase} ends.

    @return: the clients, and how many of them are connected.
    """
    clients = []
    testCase.addCleanup(lambda: [client.close() for client in clients])
    with selectors.DefaultSelector() as selector:
        for i in range(count):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            clients.append(client)
            selector.register(client, selectors.EVENT_WRITE)
        connected = set()
        deadline = time.monotonic() + 1.0
        while len(connected) < count and time.monotonic() < deadline:
            for key, events in selector.select(0.1):
                if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected.add(key.fileobj)
                selector.unregister(key.fileobj)
    return clients, len(connected)
