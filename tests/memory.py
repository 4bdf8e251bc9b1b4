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
from tcpmux.target import TargetClientFactory


class MemoryTarget:
    """
    Builds a L{TargetClientFactory} whose connection attempts are recorded
    by a L{MemoryReactorClock}, and completes or refuses them on demand.
    """

    def __init__(self, application, **options):
        self.reactor = MemoryReactorClock()
        endpoint = TCP4ClientEndpoint(self.reactor, "192.0.2.1", 502)
        options.setdefault("timeout", 10.0)
        self.factory = TargetClientFactory(
            endpoint, application, name="192.0.2.1:502", clock=self.reactor, **options
        )
        self.attempts = 0

    def pendingAttempts(self):
        return len(self.reactor.tcpClients) - self.attempts

    def accept(self):
        """
        Complete the latest connection attempt; return the target-side
        transport (what tcpmux writes to the target appears in its
        C{value()}) and the session protocol.
        """
        wrapping = self.reactor.tcpClients[-1][2]
        self.attempts = len(self.reactor.tcpClients)
        protocol = wrapping.buildProtocol(IPv4Address("TCP", "192.0.2.1", 502))
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return transport, self.factory._session

    def refuse(self):
        wrapping = self.reactor.tcpClients[-1][2]
        self.attempts = len(self.reactor.tcpClients)
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


def memoryMultiplexer(application, **targetOptions):
    target = MemoryTarget(application, **targetOptions)
    multiplexer = Multiplexer(application, target.factory)
    return multiplexer, target
