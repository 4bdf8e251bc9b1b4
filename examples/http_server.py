"""
A twisted.web HTTP/1.1 server that, like the devices tcpmux is for, serves
one connection at a time: another connection made while one is open is
closed at once. It prints a line per accepted or refused connection.

    python examples/http_server.py --port 8080
    listening on 127.0.0.1:8080
    accepted connection 1

Resources, to try tcpmux's http framing against:

  - C{GET /echo/<anything>}: the path, sent chunked (no Content-Length);
  - C{POST /upload}: the body's length and SHA-256, with a Content-Length;
  - C{GET /big?size=N}: N bytes, chunked;
  - C{GET /empty}: 204 No Content.
"""

import argparse
import hashlib

from twisted.internet import endpoints, reactor
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Site


class Echo(Resource):
    """
    Writes the request's path back in pieces, so twisted.web chunks it.
    """

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        request.write(b"path: ")
        request.write(request.path)
        request.write(b"\n")
        return b""


class Upload(Resource):
    isLeaf = True

    def render_POST(self, request):
        body = request.content.read()
        request.setHeader(b"content-type", b"text/plain")
        return b"%d %s\n" % (len(body), hashlib.sha256(body).hexdigest().encode())


class Big(Resource):
    isLeaf = True

    def render_GET(self, request):
        size = int(request.args.get(b"size", [b"0"])[0])
        block = bytes(range(256)) * 256
        while size > 0:
            request.write(block[:size])
            size -= len(block)
        return b""


class Empty(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setResponseCode(204)
        return b""


class OneAtATimeChannel(HTTPChannel):
    def connectionMade(self):
        site = self.site
        if site.current is not None:
            peer = self.transport.getPeer()
            print(f"refused connection from {peer.host}:{peer.port} (one at a time)", flush=True)
            self.transport.abortConnection()
            return
        site.current = self
        site.accepted += 1
        print(f"accepted connection {site.accepted}", flush=True)
        HTTPChannel.connectionMade(self)

    def connectionLost(self, reason):
        if self.site.current is self:
            self.site.current = None
            print("connection closed", flush=True)
        HTTPChannel.connectionLost(self, reason)


class OneAtATimeSite(Site):
    protocol = OneAtATimeChannel
    current = None
    accepted = 0


def makeSite():
    root = Resource()
    root.putChild(b"echo", Echo())
    root.putChild(b"upload", Upload())
    root.putChild(b"big", Big())
    root.putChild(b"empty", Empty())
    site = OneAtATimeSite(root)
    site.displayTracebacks = False
    return site


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args(argv)
    endpoint = endpoints.TCP4ServerEndpoint(reactor, args.port, interface=args.host)

    def listening(port):
        print(f"listening on {args.host}:{port.getHost().port}", flush=True)

    endpoint.listen(makeSite()).addCallbacks(listening, lambda f: (print(f), reactor.stop()))
    reactor.run()


if __name__ == "__main__":
    main()
