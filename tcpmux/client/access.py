# -*- test-case-name: tests.test_access -*-
"""
C{--allow}: which client addresses may connect.
"""

import ipaddress


def parseAllow(text):
    """
    The networks of C{--allow CIDR[,CIDR...]}: IPv4 or IPv6 networks
    (C{192.168.1.0/24}, C{fd00::/8}) or single addresses (C{10.0.0.5},
    C{::1}). Host bits set in a network (C{192.168.1.7/24}) are a mistake:
    they usually mean a typo in the prefix length.

    @return: a tuple of L{ipaddress.IPv4Network} and
        L{ipaddress.IPv6Network}.
    @raise ValueError: naming the entry that is no network.
    """
    networks = []
    for entry in str(text).split(","):
        entry = entry.strip()
        if not entry:
            raise ValueError(
                f"{text!r} has an empty entry: use CIDR[,CIDR...], such as "
                "192.168.1.0/24,10.0.0.5,fd00::/8"
            )
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as e:
            raise ValueError(
                f"{entry!r} is no IPv4 or IPv6 address or network ({e})"
            ) from None
    return tuple(networks)


def isAllowed(networks, address):
    """
    Whether a client whose peer address is C{address} (an
    L{twisted.internet.interfaces.IAddress}) is in one of C{networks}. An
    IPv4 client of an IPv6 listener (C{::ffff:192.0.2.7}) is matched as
    its IPv4 address. A client without an IP address (a UNIX socket) is
    in none.
    """
    host = getattr(address, "host", None)
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def describe(networks):
    """
    C{networks} as the user would write them.
    """
    return ",".join(str(network) for network in networks)
