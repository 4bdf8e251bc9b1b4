# -*- test-case-name: tests.test_target -*-
"""
Why a round trip to the target did not produce a response.

Application protocols turn these into their own error replies (a Modbus
exception response, an HTTP 502/504, ...) or into closing the client.
"""


class GatewayError(Exception):
    """
    A round trip could not be completed by the target.
    """


class TargetUnavailable(GatewayError):
    """
    There is no connection to the target: it refused, could not be reached,
    or did not accept a connection within the timeout.
    """


class TargetTimeout(GatewayError):
    """
    The request was sent but no whole response arrived within the timeout.
    """


class TargetLost(TargetTimeout):
    """
    The connection to the target closed, or the target sent something that
    could not be framed, before the whole response arrived.
    """


class TargetProtocolError(TargetLost):
    """
    The target sent bytes that cannot be framed as a response: the
    connection is renewed, and the client told the target misbehaved.
    """
