"""
Helpers for framer unit tests: a receiver that records what a framer
delivers, and ways to feed the framer bytes.
"""

from twisted.internet.testing import StringTransport
from zope.interface import implementer

from tcpmux.interfaces import IRequestReceiver, IResponseReceiver


@implementer(IRequestReceiver, IResponseReceiver)
class Recording:
    """
    Records the messages, parts and framing errors a framer reports; a
    framing error then writes its reply, if any, and closes the framer's
    transport, as tcpmux does.

    @ivar framer: the framer, once its connection is made.
    @ivar messages: each whole message, in order.
    @ivar parts: each part passed on before its message was whole (HTTP
        interim responses).
    @ivar errors: the reason of each framing error.
    @ivar lost: the reason the connection was lost, once it is.
    """

    framer = None
    lost = None
    inputDone = False

    def __init__(self):
        self.messages = []
        self.parts = []
        self.errors = []

    def startReceiving(self, framer):
        self.framer = framer

    def messageReceived(self, message):
        self.messages.append(message)

    def partReceived(self, part):
        self.parts.append(part)

    def replyInOrder(self, data):
        # Nothing is owed to anyone here: reply at once.
        self.framer.transport.write(data)

    def inputEnded(self):
        self.inputDone = True

    def framingError(self, reason, reply):
        self.errors.append(reason)
        if reply is not None:
            self.framer.transport.write(reply)
        self.framer.transport.loseConnection()

    def stopReceiving(self, reason):
        self.lost = reason


class KeepingOpen(Recording):
    """
    Records framing errors without closing the connection: a framer must
    deliver nothing more after one even so.
    """

    def framingError(self, reason, reply):
        self.errors.append(reason)


def connect(framerClass, recorder=None, transport=None):
    """
    A new C{framerClass} delivering to C{recorder} (a new L{Recording} by
    default), connected to C{transport} (a new L{StringTransport}).

    @return: C{(framer, recorder)}; the transport is C{framer.transport}.
    """
    if recorder is None:
        recorder = Recording()
    framer = framerClass(recorder)
    framer.makeConnection(StringTransport() if transport is None else transport)
    return framer, recorder


def feed(framerClass, *chunks, recorder=None):
    """
    A new C{framerClass} on a string transport, fed C{chunks}.

    @return: C{(framer, recorder)}, as L{connect}.
    """
    framer, recorder = connect(framerClass, recorder)
    for chunk in chunks:
        framer.dataReceived(chunk)
    return framer, recorder


def bytewise(data):
    """
    C{data} as reads of one byte each.
    """
    return [data[i : i + 1] for i in range(len(data))]


def chunked(data, cuts):
    """
    C{data} cut at the given offsets (taken modulo its length).
    """
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


def feedLikeAReactor(framer, chunks):
    """
    Feed C{chunks} until the framer's transport is closed, as a reactor
    would, checking after each read that it buffers less than its
    C{maxMessageSize}.
    """
    for chunk in chunks:
        if framer.transport.disconnecting:
            break
        framer.dataReceived(chunk)
        assert framer.buffered() < framer.maxMessageSize, framer.buffered()
