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

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|m|h)?\s*$")
_SCALE = {"us": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d+)$")


def parseDuration(text):
    """
    Seconds from C{"1.5"}, C{"100us"}, C{"500ms"}, C{"2s"}, C{"1m"} or
    C{"1h"}.

    @raise ValueError: for anything else, or a negative duration.
    """
    match = _DURATION.match(str(text))
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: use seconds, or a number with us, ms, s, m or h"
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


def _fields(description):
    """
    The endpoint type (lower case), positional and keyword arguments of an
    endpoint description, split on its unescaped colons: enough to find
    its host and port.
    """
    kind, *fields = re.split(r"(?<!\\):", description)
    args, kwargs = [], {}
    for field in fields:
        name, equals, value = field.partition("=")
        if equals:
            kwargs[name] = value
        else:
            args.append(field)
    return kind.strip().lower(), args, kwargs


def _portProblem(text, lowest):
    """
    What is wrong with the port C{text}, in the user's terms, or L{None}.
    """
    text = str(text).strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        return f"port must be a number, not {text!r}"
    if not lowest <= int(text) <= 65535:
        return f"port must be {lowest}..65535, not {int(text)}"
    return None


# Endpoint types whose description names a TCP port.
_TCP_SERVERS = ("tcp", "tcp6", "ssl")

# The listen backlog of a listener that names none: as many connections as
# --max-clients lets in by default may wait to be accepted. Twisted's own
# default, 50, drops the handshakes of clients beyond it that connect at the
# same instant (all of them, when tcpmux restarts), and they retry only
# after one second, then three, then seven.
LISTEN_BACKLOG = 1024
# Where each server endpoint type takes its backlog as a positional argument
# (twisted.internet.endpoints' parsers).
_BACKLOG_POSITION = {"tcp": 2, "tcp6": 2, "ssl": 5, "unix": 2}
_TCP_CLIENTS = ("tcp", "ssl", "tls")


def listenEndpoint(reactor, text, clientCA=None):
    """
    The server endpoint for C{--listen}.

    @param clientCA: L{None}, or (C{--tls-client-ca}) a PEM file of the CAs
        whose certificates clients of an C{ssl:} endpoint must present.

    @raise ValueError: if C{text} is not a valid endpoint description, or
        names a TCP port outside 0..65535.
    """
    description = listenDescription(text)
    if re.fullmatch(r"\s*[+-]\d+\s*", str(text)):
        description = f"tcp:{str(text).strip()}"
    kind, args, kwargs = _fields(description)
    if kind in _TCP_SERVERS:
        port = kwargs.get("port", args[0] if args else None)
        if port is None:
            raise ValueError(f"bad listen address {text!r}: {kind}: needs a port")
        problem = _portProblem(port, 0)
        if problem is not None:
            raise ValueError(f"bad listen address {text!r}: {problem}")
    if clientCA is not None:
        from tcpmux import tls

        if kind != "ssl":
            raise ValueError(
                f"--tls-client-ca needs an ssl: listen address "
                f"(ssl:5020:privateKey=key.pem:certKey=cert.pem), not {text!r}"
            )
        return tls.clientCertificateEndpoint(reactor, description, args, kwargs, clientCA)
    if (
        kind in _BACKLOG_POSITION
        and "backlog" not in kwargs
        and len(args) <= _BACKLOG_POSITION[kind]
    ):
        description += f":backlog={LISTEN_BACKLOG}"
    try:
        return serverFromString(reactor, description)
    except ImportError:
        from tcpmux import tls

        raise ValueError(f"bad listen address {text!r}: {tls.NEEDS_PYOPENSSL}") from None
    except Exception as e:
        raise ValueError(
            f"bad listen address {text!r}: use a port number or a Twisted "
            f"server endpoint string such as tcp:5020:interface=127.0.0.1 ({e})"
        ) from None


_LOOKS_LIKE_HOST_PORT = re.compile(r"^(?:\[[^\]]*\]|[^:\[\]=]+):[^:=]*$")
_MISSING_ARGUMENTS = re.compile(
    r"missing \d+ required (?:positional |keyword-only )?arguments?: (.+)$"
)


def isSerial(description):
    """
    Whether the target description C{description} names a C{serial:} port
    (L{tcpmux.target.serial}, imported only by a run that has one).
    """
    return bool(re.match(r"\s*serial:", str(description), re.IGNORECASE))


def targetEndpoint(reactor, text, timeout):
    """
    The client endpoint for C{--target}: C{host:port}, C{[v6addr]:port}, or
    any Twisted client endpoint string (C{tcp:host=...:port=...},
    C{unix:path=...}, C{tls:...}).

    C{host:port} with a host name resolves it and tries IPv4 and IPv6
    addresses (L{HostnameEndpoint}); with an address, it connects to it.

    @raise ValueError: if C{text} is none of these; its message says what
        is wrong in the user's terms.
    """
    text = str(text).strip()
    match = _HOST_PORT.match(text)
    if match is not None:
        host = match.group("v6") or match.group("host")
        problem = _portProblem(match.group("port"), 1)
        if problem is not None:
            raise ValueError(f"bad target {text!r}: {problem}")
        port = int(match.group("port"))
        # An address needs no resolution: a TCP endpoint reports a refusal
        # at once, where HostnameEndpoint reports it only at its next
        # attempt interval (0.3 s), which would delay recovery.
        if isIPAddress(host):
            return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
        if isIPv6Address(host):
            return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    kind, args, kwargs = _fields(text)
    if kind in _TCP_CLIENTS and args + list(kwargs):
        # host and port, each positional or named (as Twisted's parsers
        # take them).
        host, port = kwargs.get("host"), kwargs.get("port")
        if host is None and args:
            host, args = args[0], args[1:]
        if port is None and args:
            port = args[0]
        missing = [
            name + "=" for name, value in (("host", host), ("port", port)) if not value
        ]
        if missing:
            raise ValueError(
                f"bad target {text!r}: {kind}: endpoint needs {' and '.join(missing)} "
                f"({kind}:host=HOST:port=PORT)"
            )
        problem = _portProblem(port, 1)
        if problem is not None:
            raise ValueError(f"bad target {text!r}: {problem}")
    try:
        return clientFromString(reactor, text)
    except Exception as e:
        raise ValueError(f"bad target {text!r}: {_targetProblem(text, kind, e)}") from None


def _targetProblem(text, kind, error):
    """
    Why Twisted could not make a client endpoint of C{text}, in the user's
    terms.
    """
    if not text:
        return "use host:port, such as 192.0.2.10:502"
    if ":" not in text:
        return f"no port: use host:port, such as {text}:502"
    if _LOOKS_LIKE_HOST_PORT.match(text):
        # host:port whose port is not a number (and whose host is no
        # endpoint type).
        return _portProblem(text.rsplit(":", 1)[1], 1)
    missing = _MISSING_ARGUMENTS.search(str(error))
    if isinstance(error, TypeError) and missing is not None:
        names = re.findall(r"'([^']+)'", missing.group(1))
        return f"{kind}: endpoint needs {' and '.join(name + '=' for name in names)}"
    return (
        "use host:port, [v6addr]:port or a Twisted client endpoint string "
        f"such as tcp:host=10.0.0.5:port=502 ({error})"
    )
