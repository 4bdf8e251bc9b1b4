# -*- test-case-name: tests.test_interfaces -*-
"""
The seams of tcpmux, as interfaces.

One request travels through them in a straight line::

    client bytes -> request framer (IFramer)
                 -> client session (IRequestReceiver.messageReceived)
                 -> round-trip queue -> target (ITarget.roundTrip)
                 -> target session, which writes it and tells its response
                    framer what to expect (IResponseFramer.expectResponseTo)
    target bytes -> response framer
                 -> target session (IResponseReceiver.messageReceived)
                 -> the round trip's Deferred fires -> client session
                 -> client transport

The application protocol (L{IApplicationProtocol}) supplies the framers and
says what a client is told when a round trip fails; the core knows nothing
else about any protocol.
"""

from zope.interface import Attribute, Interface
from twisted.internet.interfaces import IProtocol


class IMessageReceiver(Interface):
    """
    Receives the whole messages a framer cut from its connection's bytes,
    as AMP's C{IBoxReceiver} receives boxes.
    """

    def startReceiving(framer):
        """
        The framer's connection is made; C{framer.transport} is its transport.
        """

    def messageReceived(message):
        """
        One whole message, as bytes, exactly as it came on the wire.
        """

    def framingError(reason, reply):
        """
        The peer sent bytes that can never form a valid message; the framer
        delivers nothing more.

        @param reason: a short human-readable explanation, for the log.
        @param reply: bytes to send the peer before it is closed (an HTTP
            400, say), or L{None}.
        """

    def inputEnded():
        """
        The peer shut down its sending side (a TCP half-close): no more
        bytes will come, but it may still read.
        """

    def stopReceiving(reason):
        """
        The framer's connection is gone (a L{twisted.python.failure.Failure}).
        """


class IRequestReceiver(IMessageReceiver):
    """
    Receives a client's requests.
    """

    def replyInOrder(data):
        """
        Send C{data} to the client once every answer owed for the requests
        delivered so far has been sent (HTTP's C{100 Continue} to a request
        whose body has not come yet).
        """


class IResponseReceiver(IMessageReceiver):
    """
    Receives a target's responses: whole ones, and parts of one to be passed
    on before it is whole.
    """

    def partReceived(part):
        """
        Bytes that belong to the answer to the request in flight and may be
        passed on to its client now: an HTTP C{1xx} interim response, or the
        head and body of a long response as they arrive, so that tcpmux
        never holds a whole large answer. The final C{messageReceived}
        carries the rest (possibly C{b""}).
        """


class IFramer(IProtocol):
    """
    A protocol that buffers bytes and hands each whole message to its
    C{receiver}. Messages are passed byte for byte, header included.
    """

    receiver = Attribute("The L{IMessageReceiver} that gets whole messages.")
    maxMessageSize = Attribute(
        "The most bytes of one message the framer ever holds, however the "
        "input is split."
    )

    def buffered():
        """
        How many bytes were received and not yet delivered. While a message
        is being delivered, the bytes that came after it in the same read.
        """


class IResponseFramer(IFramer):
    """
    A framer of a target's responses.
    """

    def expectResponseTo(request):
        """
        C{request} is about to be written: frame (or check) the response to
        it. HTTP needs this for HEAD; Modbus RTU checks the address and
        function code.
        """


class IPipelining(Interface):
    """
    For protocols whose responses name the request they answer (Modbus TCP's
    transaction id): requests on one target connection get ids unique on it,
    and each response is matched by its id and mapped back.
    """

    def buildResponseFramer(receiver):
        """
        An L{IResponseFramer} that passes every response on, whatever its id.
        """

    def requestWithId(request, wireId):
        """
        C{request} carrying C{wireId} (an int) instead of its client's id.
        """

    def responseId(response):
        """
        The id C{response} carries (an int).
        """

    def responseFor(response, request):
        """
        C{response} as C{request}'s client must see it: its own id back.
        """


class IApplicationProtocol(Interface):
    """
    One application protocol: how its messages are framed, and what a
    client is told when its round trip fails.
    """

    name = Attribute("The name given to C{--protocol}.")
    description = Attribute("One line for C{--list-protocols}.")
    pipelining = Attribute(
        "An L{IPipelining}, or L{None} when responses do not name their "
        "request."
    )

    def buildRequestFramer(receiver):
        """
        An L{IFramer} that cuts a client's bytes into requests for
        C{receiver} (an L{IRequestReceiver}).
        """

    def buildResponseFramer(receiver):
        """
        An L{IResponseFramer} that cuts a target's bytes into responses for
        C{receiver} (an L{IResponseReceiver}).
        """

    def errorResponse(request, error):
        """
        What the client that sent C{request} is told when the round trip
        failed with C{error} (a L{tcpmux.errors.GatewayError}): bytes, after
        which the client stays connected, or L{None} to close the client.
        """

    def closesClient(request, response):
        """
        Whether the client must be closed once C{response} to C{request}
        has been delivered (HTTP C{Connection: close}).
        """

    def describe(message):
        """
        A short summary of C{message} for verbose logs.
        """

    def routingKey(request):
        """
        What requests are routed to one of several targets by (a Modbus
        unit id), or L{None} for a protocol that cannot be routed.
        """


class IRoundTrip(Interface):
    """
    One request on its way to an answer.
    """

    result = Attribute(
        "A L{Deferred} that fires with the whole answer, or fails with a "
        "L{tcpmux.errors.GatewayError}."
    )

    def withdraw():
        """
        Its client is gone: if the request has not gone to the target yet,
        it never will.
        """


class IDispatcher(Interface):
    """
    What happens to a client's whole request: queued for a target (the
    round-trip queue), or answered on the way by a gateway (a Modbus
    read-only rule, a cache), or rewritten first (a unit id map).
    Dispatchers wrap one another; the innermost is the queue of each target.
    """

    def dispatch(request, client, partReceived=None):
        """
        Start the round trip of C{request} from C{client} (its name, for
        logs).

        @param partReceived: called with each part of the answer that may be
            passed on before it is whole.
        @return: an L{IRoundTrip}.
        """


class ITarget(Interface):
    """
    What the round-trip queue needs of a target: one connection
    (L{tcpmux.target.factory.TargetClientFactory}), a pool of them, or a
    pipelined one.
    """

    name = Attribute("How logs name the target.")
    concurrency = Attribute("How many round trips it carries at once.")

    def start():
        """
        Open the connection(s) now, and keep them open.
        """

    def release():
        """
        Close the connection(s) until L{start} is called again
        (C{--idle-close}).
        """

    def stop():
        """
        Close the connection(s) for good.

        @return: a L{Deferred} that fires once they are closed.
        """

    def roundTrip(request, deadline=None, partReceived=None):
        """
        Write C{request} once a connection is ready.

        @param deadline: the clock time at which whoever asks gives up, or
            L{None}; a request with too little time left when its turn comes
            is not written.
        @param partReceived: called with each part of the answer that may be
            passed on before it is whole (L{IResponseReceiver.partReceived}).
        @return: a L{Deferred} that fires with the whole response or fails
            with a L{tcpmux.errors.GatewayError}. Cancelling it abandons the
            request: it fails with L{tcpmux.errors.TargetUnavailable} if it
            was still waiting for a connection, else with
            L{tcpmux.errors.TargetTimeout} (and a connection that may still
            answer it is renewed).
        """
