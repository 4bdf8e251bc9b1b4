"""
ISO 8583 helpers shared by the C{iso8583} and C{mpu} tests: length-framed
messages (2-byte binary or 4-digit ASCII headers), pyiso8583 terminals over
real TCP, and end-to-end scenarios through tcpmux to
C{examples/iso8583_server.py}.
"""

import os
import socket
import struct
import sys

import iso8583
from iso8583.specs import default_ascii as spec
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue

from tests.support import (
    EXAMPLES,
    ROOT,
    childEnvironment,
    receiveExactly,
    receiveUntilClosed,
    runExample,
    startMultiplexer,
)


def framed(payload):
    """
    C{payload} with its 2-byte binary length header.
    """
    return struct.pack(">H", len(payload)) + payload


def sendFramed(sock, raw, header):
    """
    Send C{raw} with a C{header} (C{"ascii"} or C{"binary"}) length header.
    """
    if header == "ascii":
        sock.sendall(b"%04d" % len(raw) + raw)
    else:
        sock.sendall(framed(raw))


def receiveFramed(sock, header):
    """
    Receive one message with a C{header} length header; return its body.
    """
    if header == "ascii":
        length = int(receiveExactly(sock, 4))
    else:
        (length,) = struct.unpack(">H", receiveExactly(sock, 2))
    return receiveExactly(sock, length)


def isoRequest(mti, stan, terminal):
    """
    An encoded ISO 8583 request: an 0800 network message, or a 0200.
    """
    message = {"t": mti, "7": "1124202200", "11": f"{stan:06d}", "41": terminal}
    if mti == "0800":
        message["70"] = "301"
    else:
        message.update({"2": "4111111111111111", "3": "000000", "4": f"{stan:012d}"})
    raw, _ = iso8583.encode(message, spec)
    return bytes(raw)


def isoClientSession(port, header, index, rounds=4, batch=3):
    """
    One ISO 8583 terminal: C{rounds} times, send C{batch} requests at once
    (an 0800, then 0200s), then read and decode the answers.

    @return: C{(mti, stan, amount)} of every answer, in order.
    """
    terminal = f"TERM{index:04d}"
    seen = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stan = index * 1000
        for _ in range(rounds):
            sent = []
            for n in range(batch):
                stan += 1
                mti = "0800" if n == 0 else "0200"
                sent.append(stan)
                sendFramed(sock, isoRequest(mti, stan, terminal), header)
            for _ in sent:
                answer, _ = iso8583.decode(receiveFramed(sock, header), spec)
                assert answer["41"] == terminal, answer
                seen.append((answer["t"], int(answer["11"]), answer.get("4")))
    return seen


def expectedSession(index, rounds=4, batch=3):
    """
    What L{isoClientSession} returns when every answer is right.
    """
    expected = []
    stan = index * 1000
    for _ in range(rounds):
        for n in range(batch):
            stan += 1
            if n == 0:
                expected.append(("0810", stan, None))
            else:
                expected.append(("0210", stan, f"{stan:012d}"))
    return expected


def closedAfterRequest(port, raw, header):
    """
    Send one request; return what comes back before the connection closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sendFramed(sock, raw, header)
        return receiveUntilClosed(sock, 1000)


async def manyTerminals(testCase, protocol, header, clients=6):
    """
    C{clients} terminals at once through C{protocol} each get their own
    answers over the host's single connection.
    """
    host, hostPort = await runExample(
        testCase, "iso8583_server.py", "--port", "0", "--header", header
    )
    port, _ = await startMultiplexer(testCase, protocol, hostPort)
    results = await gatherResults(
        [deferToThread(isoClientSession, port, header, index) for index in range(1, clients + 1)]
    )
    for index, seen in zip(range(1, clients + 1), results):
        testCase.assertEqual(seen, expectedSession(index))
    testCase.assertEqual(host.count("accepted connection"), 1)
    testCase.assertEqual(host.count("refused connection"), 0)
    testCase.assertEqual(host.count("answered"), clients * 12)
    return host, port


async def badClientClosedOthersServed(testCase, protocol, header, badBytes):
    """
    A client sending C{badBytes} is closed; a terminal connected at the
    same time is answered before and after.
    """
    host, hostPort = await runExample(
        testCase, "iso8583_server.py", "--port", "0", "--header", header
    )
    port, _ = await startMultiplexer(testCase, protocol, hostPort)
    good = socket.create_connection(("127.0.0.1", port), timeout=10)
    testCase.addCleanup(good.close)

    def ask(stan):
        sendFramed(good, isoRequest("0800", stan, "GOOD0001"), header)
        answer, _ = iso8583.decode(receiveFramed(good, header), spec)
        return answer["t"], answer["11"]

    testCase.assertEqual(await deferToThread(ask, 7), ("0810", "000007"))

    def badClient():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(badBytes)
            return sock.recv(100)

    testCase.assertEqual(await deferToThread(badClient), b"")
    testCase.assertEqual(await deferToThread(ask, 8), ("0810", "000008"))
    testCase.assertEqual(host.count("accepted connection"), 1)


async def exampleClientThrough(testCase, protocol, header):
    """
    C{examples/iso8583_client.py} through C{protocol} prints each answer
    with its request's STAN and exits 0.
    """
    host, hostPort = await runExample(
        testCase, "iso8583_server.py", "--port", "0", "--header", header
    )
    port, _ = await startMultiplexer(testCase, protocol, hostPort)
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        [os.path.join(EXAMPLES, "iso8583_client.py"), "--port", str(port),
         "--header", header, "--count", "2", "--stan", "41"],
        env=childEnvironment(),
        path=ROOT,
    )
    testCase.assertEqual(code, 0, err)
    testCase.assertEqual(
        out.decode().splitlines(),
        [
            "0800 stan=000041 -> 0810 stan=000041 response code 00",
            "0200 stan=000042 -> 0210 stan=000042 response code 00",
            "0200 stan=000043 -> 0210 stan=000043 response code 00",
        ],
    )
