#!/usr/bin/env python3
"""
A small ISO 8583 host to try C{tcpmux --protocol iso8583} or C{mpu} with.

It answers each request with the matching response (0800 -> 0810,
0200 -> 0210, any xx0x/xx2x -> xx1x/xx3x) carrying the request's fields,
the same STAN (field 11) and response code 00 (field 39). Messages use
pyiso8583's default ASCII spec behind a 2-byte binary length header
(C{--header binary}, for C{iso8583}) or a 4-digit ASCII decimal one
(C{--header ascii}, for C{mpu}).

Like many real host links it serves one connection at a time: another one
is refused (closed at once) while the first is open.

    python examples/iso8583_server.py --port 8583 --header binary
"""

import sys

import iso8583
from iso8583.specs import default_ascii as spec
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python import usage

HEADERS = {
    # name: (header size, encode length, decode header or None if invalid)
    "binary": (
        2,
        lambda n: n.to_bytes(2, "big"),
        lambda h: int.from_bytes(h, "big"),
    ),
    "ascii": (
        4,
        lambda n: b"%04d" % n,
        lambda h: int(h) if h.isdigit() else None,
    ),
}


def responseTo(request):
    """
    The decoded response to a decoded request, or L{None} if it is not a
    request (its MTI's function digit is not 0 or 2).
    """
    mti = request["t"]
    if len(mti) != 4 or mti[2] not in "02":
        return None
    response = {
        k: v for k, v in request.items() if k not in ("t", "p", "1", "52", "55")
    }
    response["t"] = mti[:2] + str(int(mti[2]) + 1) + mti[3]
    response["39"] = "00"
    if mti[1] in "12":
        response["38"] = "A" + request.get("11", "00000")[-5:]
    return response


class HostConnection(Protocol):
    """
    One client link: length-prefixed ISO 8583 requests in, responses out.
    """

    _buffer = b""

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.name = f"{peer.host}:{peer.port}"
        if self.factory.active is not None:
            print(f"refused connection from {self.name}", flush=True)
            self.transport.loseConnection()
            self.refused = True
            return
        self.refused = False
        self.factory.active = self
        print(f"accepted connection from {self.name}", flush=True)

    def connectionLost(self, reason):
        if not self.refused:
            self.factory.active = None
            print(f"closed connection from {self.name}", flush=True)

    def dataReceived(self, data):
        if self.refused:
            return
        size, encodeLength, decodeHeader = HEADERS[self.factory.header]
        self._buffer += data
        while len(self._buffer) >= size:
            length = decodeHeader(self._buffer[:size])
            if length is None:
                print(f"bad length header {self._buffer[:size]!r}", flush=True)
                self.transport.loseConnection()
                return
            if len(self._buffer) < size + length:
                return
            raw = self._buffer[size : size + length]
            self._buffer = self._buffer[size + length :]
            if length:
                self.messageReceived(raw, encodeLength)

    def messageReceived(self, raw, encodeLength):
        try:
            request, _ = iso8583.decode(raw, spec)
        except iso8583.DecodeError as e:
            print(f"cannot decode a message: {e}", flush=True)
            self.transport.loseConnection()
            return
        response = responseTo(request)
        if response is None:
            print(f"ignored {request['t']}: not a request", flush=True)
            return
        encoded, _ = iso8583.encode(response, spec)
        encoded = bytes(encoded)
        print(
            "answered {} stan={} with {}".format(
                request["t"], request.get("11", "-"), response["t"]
            ),
            flush=True,
        )
        reply = encodeLength(len(encoded)) + encoded
        if self.factory.delay:
            reactor.callLater(self.factory.delay, self._send, reply)
        else:
            self._send(reply)

    def _send(self, reply):
        if self.transport.connected:
            self.transport.write(reply)


class HostFactory(Factory):
    protocol = HostConnection
    noisy = False

    def __init__(self, header, delay):
        self.header = header
        self.delay = delay
        self.active = None


class Options(usage.Options):
    optParameters = [
        ["port", "p", 8583, "TCP port to listen on (0: any free port).", int],
        ["interface", "i", "127.0.0.1", "Address to listen on."],
        ["header", None, "binary",
         "Length header: binary (2 bytes, iso8583) or ascii (4 digits, mpu)."],
        ["delay", None, 0.0, "Seconds to wait before each answer.", float],
    ]

    def postOptions(self):
        if self["header"] not in HEADERS:
            raise usage.UsageError("--header must be binary or ascii")


def main(argv):
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        raise SystemExit(f"{e}\n{options}")
    factory = HostFactory(options["header"], options["delay"])
    endpoint = TCP4ServerEndpoint(
        reactor, options["port"], interface=options["interface"]
    )

    def listening(port):
        address = port.getHost()
        print(
            f"ISO 8583 host ({options['header']} length header) "
            f"listening on {address.host}:{address.port}",
            flush=True,
        )

    def failed(reason):
        print(f"cannot listen: {reason.getErrorMessage()}", flush=True)
        reactor.stop()

    endpoint.listen(factory).addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
