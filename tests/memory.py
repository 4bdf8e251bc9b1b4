"""
A target and clients in memory, on a L{MemoryReactorClock}, for driving the
multiplexer and the target connection step by step in unit tests.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.python.failure import Failure

from tcpmux.multiplexer import Multiplexer
from tcpmux.target.factory import TargetClientFactory


class MemoryTarget:
    """
    Builds a L{TargetClientFactory} whose connection attempts are recorded
    by a L{MemoryReactorClock}, and completes or refuses them on demand.
    """

    def __init__(self, application, reactor=None, **options):
        self.reactor = reactor if reactor is not None else MemoryReactorClock()
        endpoint = TCP4ClientEndpoint(self.reactor, "192.0.2.1", 502)
        options.setdefault("timeout", 10.0)
        self.factory = TargetClientFactory(
            endpoint, application, name="192.0.2.1:502", clock=self.reactor, **options
        )
        self.attempts = 0

    def pendingAttempts(self):
        """
        How many connection attempts are not yet accepted or refused.
        """
        return len(self.reactor.tcpClients) - self.attempts

    def _latestAttempt(self):
        # Several targets may share one reactor: find this factory's latest
        # attempt (the endpoint wraps our factory).
        for index in range(len(self.reactor.tcpClients) - 1, -1, -1):
            wrapping = self.reactor.tcpClients[index][2]
            if getattr(wrapping, "_wrappedFactory", None) is self.factory:
                self.attempts = len(self.reactor.tcpClients)
                return wrapping
        raise AssertionError("no connection attempt")

    def accept(self):
        """
        Complete the latest connection attempt; return the target-side
        transport (what tcpmux writes to the target appears in its
        C{value()}) and the session protocol.
        """
        wrapping = self._latestAttempt()
        protocol = wrapping.buildProtocol(IPv4Address("TCP", "192.0.2.1", 502))
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return transport, self.factory.session

    def refuse(self):
        """
        Refuse the latest connection attempt.
        """
        wrapping = self._latestAttempt()
        wrapping.clientConnectionFailed(None, Failure(ConnectionRefusedError()))


def connectClient(multiplexer, port=40000):
    """
    A client connected to C{multiplexer} over a string transport.
    """
    protocol = multiplexer.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
    transport = StringTransportWithDisconnection(
        peerAddress=IPv4Address("TCP", "127.0.0.1", port)
    )
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return protocol, transport


def memoryMultiplexer(application, multiplexerOptions=None, **targetOptions):
    """
    A L{Multiplexer} built with C{multiplexerOptions} in front of a
    L{MemoryTarget} built with C{targetOptions}.
    """
    target = MemoryTarget(application, **targetOptions)
    multiplexer = Multiplexer(
        application, target.factory, clock=target.reactor, **(multiplexerOptions or {})
    )
    return multiplexer, target
