"""
The memory floor for tcpmux's idle-client figures (C{bench.py}): a
C{twistd} plugin, run as tcpmux is (C{twistd -n floor --port N}, through
twistd's plugin scan), serving a bare Twisted echo protocol with no tcpmux
code. It answers the load generator's echo requests itself, so that each
idle client makes its one round trip as it does through tcpmux. Found on
C{PYTHONPATH=benchmarks/floor} only: it is not part of tcpmux.
"""

from zope.interface import implementer

from twisted.application import internet
from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.plugin import IPlugin
from twisted.python import usage


class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Options(usage.Options):
    optParameters = [["port", None, None, "the port to listen on, at 127.0.0.1"]]


@implementer(IServiceMaker, IPlugin)
class Floor:
    tapname = "floor"
    description = "A bare Twisted echo server: the memory floor of tcpmux's figures"
    options = Options

    def makeService(self, options):
        endpoint = serverFromString(
            reactor, f"tcp:{options['port']}:interface=127.0.0.1:backlog=1024"
        )
        return internet.StreamServerEndpointService(endpoint, Factory.forProtocol(Echo))


floor = Floor()
