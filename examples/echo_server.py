"""
An RFC 862 echo server that, like the devices tcpmux is for, serves one
connection at a time: another connection made while one is open is closed at
once. It prints a line per accepted or refused connection.

    python examples/echo_server.py --port 7007
    listening on 127.0.0.1:7007
"""

import argparse

from twisted.internet import endpoints, reactor
from twisted.internet.protocol import Factory, Protocol


class Echo(Protocol):
    def connectionMade(self):
        if self.factory.current is not None:
            peer = self.transport.getPeer()
            print(f"refused connection from {peer.host}:{peer.port} (one at a time)", flush=True)
            self.transport.loseConnection()
            return
        self.factory.current = self
        self.factory.accepted += 1
        print(f"accepted connection {self.factory.accepted}", flush=True)

    def dataReceived(self, data):
        self.transport.write(data)

    def connectionLost(self, reason):
        if self.factory.current is self:
            self.factory.current = None
            print("connection closed", flush=True)


class OneAtATimeFactory(Factory):
    protocol = Echo
    current = None
    accepted = 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7007, help="0 picks a free port")
    args = parser.parse_args(argv)
    endpoint = endpoints.TCP4ServerEndpoint(reactor, args.port, interface=args.host)

    def listening(port):
        print(f"listening on {args.host}:{port.getHost().port}", flush=True)

    endpoint.listen(OneAtATimeFactory()).addCallbacks(listening, lambda f: (print(f), reactor.stop()))
    reactor.run()


if __name__ == "__main__":
    main()
