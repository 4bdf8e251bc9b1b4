#!/usr/bin/env python3
"""
Send a few ISO 8583 messages (an 0800 echo test, then 0200 purchases) and
print each answer; check that each carries its request's STAN.

    python examples/iso8583_client.py --port 8000 --header binary --count 3

Messages use pyiso8583's default ASCII spec behind a 2-byte binary length
header (C{--header binary}, for C{tcpmux --protocol iso8583}) or a 4-digit
ASCII decimal one (C{--header ascii}, for C{mpu}). Exits with status 1 if an
answer is missing or carries the wrong STAN.
"""

import socket
import sys
import time

import iso8583
from iso8583.specs import default_ascii as spec
from twisted.python import usage


def frame(message, header):
    """
    C{message} (bytes) behind its length header.
    """
    if header == "ascii":
        return b"%04d" % len(message) + message
    return len(message).to_bytes(2, "big") + message


def receive(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def readMessage(sock, header):
    """
    The next non-empty message from C{sock}, header removed.
    """
    while True:
        if header == "ascii":
            length = int(receive(sock, 4))
        else:
            length = int.from_bytes(receive(sock, 2), "big")
        if length:
            return receive(sock, length)


def request(mti, stan, terminal="TERM0001", amount=1000):
    """
    A decoded 0800 network management or 0200 purchase request.
    """
    message = {
        "t": mti,
        "7": time.strftime("%m%d%H%M%S", time.gmtime()),
        "11": f"{stan:06d}",
        "41": terminal,
    }
    if mti == "0800":
        message["70"] = "301"  # echo test
    else:
        message.update(
            {
                "2": "4111111111111111",
                "3": "000000",
                "4": f"{amount:012d}",
                "49": "840",
            }
        )
    return message


class Options(usage.Options):
    optParameters = [
        ["host", "h", "127.0.0.1", "Where tcpmux (or the host) listens."],
        ["port", "p", 8000, "Its port.", int],
        ["header", None, "binary", "Length header: binary or ascii."],
        ["count", "c", 3, "How many 0200 purchases after the 0800.", int],
        ["stan", "s", 1, "The first STAN.", int],
    ]


def main(argv):
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        raise SystemExit(f"{e}\n{options}")
    header = options["header"]
    ok = True
    with socket.create_connection((options["host"], options["port"]), 10) as sock:
        mtis = ["0800"] + ["0200"] * options["count"]
        for index, mti in enumerate(mtis):
            stan = options["stan"] + index
            raw, _ = iso8583.encode(request(mti, stan), spec)
            sock.sendall(frame(bytes(raw), header))
            answer, _ = iso8583.decode(readMessage(sock, header), spec)
            good = answer.get("11") == f"{stan:06d}"
            ok = ok and good
            print(
                "{} stan={:06d} -> {} stan={} response code {}{}".format(
                    mti,
                    stan,
                    answer["t"],
                    answer.get("11"),
                    answer.get("39"),
                    "" if good else "  WRONG STAN",
                ),
                flush=True,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
