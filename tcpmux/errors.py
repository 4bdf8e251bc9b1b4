# -*- test-case-name: tests.test_target -*-
"""
Why a round trip to the target did not produce a response.

Application protocols turn these into their own error replies (a Modbus
exception response, an HTTP 502/504, ...) or into closing the client. The
hierarchy is flat: each name says what happened, and no check depends on
the order of C{isinstance} tests.
"""


class GatewayError(Exception):
    """
    A round trip could not be completed by the target.
    """


class TargetUnavailable(GatewayError):
    """
    There is no connection to the target: it refused, could not be reached,
    no connection came before the deadline, or tcpmux is stopping.
    """


class TargetTimeout(GatewayError):
    """
    No whole response came in time: the request was sent and not answered,
    or it was never sent because its time ran out first.
    """


class TargetLost(GatewayError):
    """
    The connection to the target closed before the whole response arrived.
    """


class InvalidResponse(GatewayError):
    """
    The target sent bytes that cannot be framed as a response, or that
    answer no request: the connection is renewed.
    """
