# -*- test-case-name: tests.test_config -*-
"""
Parsing what users write: durations, listen and target addresses.
"""

import re

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    clientFromString,
    serverFromString,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d+)$")


def parseDuration(text):
    """
    Seconds from C{"1.5"}, C{"500ms"}, C{"2s"}, C{"1m"} or C{"1h"}.

    @raise ValueError: for anything else, or a negative duration.
    """
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: use seconds, or a number with ms, s, m or h"
        )
    return float(match.group(1)) * _SCALE[match.group(2)]


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_SCALE = {
    None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
    "gb": 1000**3, "gib": 1024**3,
}


def parseSize(text):
    """
    Bytes from C{"65536"}, C{"64KiB"}, C{"4MB"}, C{"1GiB"} (KB, MB and GB
    are powers of 1000; KiB, MiB and GiB of 1024).

    @raise ValueError: for anything else, or zero.
    """
    match = _SIZE.match(str(text))
    if match is None:
        raise ValueError(
            f"{text!r} is not a size: use bytes, or a number with KB, MB, GB, "
            "KiB, MiB or GiB"
        )
    unit = match.group(2)
    value = int(match.group(1)) * _SIZE_SCALE[unit.lower() if unit else None]
    if value < 1:
        raise ValueError(f"{text!r} must be at least 1 byte")
    return value


def parseCount(text):
    """
    A whole number greater than zero.
    """
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{text!r} must be at least 1")
    return value


def listenDescription(text):
    """
    The server endpoint string for C{--listen}: a bare port number means
    TCP on every interface (C{5020} -> C{tcp:5020}).
    """
    text = str(text).strip()
    if text.isdigit():
        return f"tcp:{text}"
    return text


def listenEndpoint(reactor, text):
    """
    The server endpoint for C{--listen}.

    @raise ValueError: if C{text} is not a valid endpoint description.
    """
    description = listenDescription(text)
    try:
        return serverFromString(reactor, description)
    except Exception as e:
        raise ValueError(f"bad listen address {text!r}: {e}") from None


def targetEndpoint(reactor, text, timeout):
    """
    The client endpoint for C{--target}: C{host:port}, C{[v6addr]:port}, or
    any Twisted client endpoint string (C{tcp:host=...:port=...},
    C{unix:path=...}, C{tls:...}).

    C{host:port} with a host name resolves it and tries IPv4 and IPv6
    addresses (L{HostnameEndpoint}); with an address, it connects to it.

    @raise ValueError: if C{text} is none of these.
    """
    text = str(text).strip()
    match = _HOST_PORT.match(text)
    if match is not None:
        host = match.group("v6") or match.group("host")
        port = int(match.group("port"))
        if not 0 < port < 65536:
            raise ValueError(f"bad target {text!r}: port {port} is out of range")
        # An address needs no resolution: a TCP endpoint reports a refusal
        # at once, where HostnameEndpoint reports it only at its next
        # attempt interval (0.3 s), which would delay recovery.
        if isIPAddress(host):
            return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
        if isIPv6Address(host):
            return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    try:
        return clientFromString(reactor, text)
    except Exception as e:
        raise ValueError(
            f"bad target {text!r}: use host:port, [v6addr]:port or a Twisted "
            f"client endpoint string ({e})"
        ) from None
