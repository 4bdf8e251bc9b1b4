# -*- test-case-name: tests.test_target -*-
"""
The connector interface L{ReconnectingClientFactory} drives, over any
client endpoint.
"""

from twisted.internet import error


class EndpointConnector:
    """
    C{connect}, C{stopConnecting} and C{disconnect}, as
    L{twisted.internet.interfaces.IConnector} offers them, over any client
    endpoint: TCP, TLS, UNIX, or whatever an endpoint string names. How long
    one attempt may take is the endpoint's own C{timeout}.
    """

    def __init__(self, endpoint, factory):
        self.endpoint = endpoint
        self.factory = factory
        self._attempt = None
        self._protocol = None

    def connect(self):
        self.factory.startedConnecting(self)
        attempt = self._attempt = self.endpoint.connect(self.factory)
        attempt.addCallbacks(self._connected, self._failed)

    def _connected(self, protocol):
        self._attempt = None
        self._protocol = protocol

    def _failed(self, reason):
        self._attempt = None
        self.factory.clientConnectionFailed(self, reason)

    def stopConnecting(self):
        if self._attempt is None:
            raise error.NotConnectingError()
        self._attempt.cancel()

    def disconnect(self):
        if self._attempt is not None:
            self._attempt.cancel()
        elif self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.loseConnection()

    def connectionLost(self, reason):
        """
        The connection this connector made is gone: tell the factory, as a
        reactor's connector would.
        """
        self._protocol = None
        self.factory.clientConnectionLost(self, reason)

    def getDestination(self):
        return self.endpoint
