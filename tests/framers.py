"""
Helpers for framer unit tests: a receiver that records what it delivers,
and ways to feed it bytes.
"""

from twisted.internet.testing import StringTransport


class Recording:
    """
    Mixed in before a framer: records the messages it delivers and the
    framing errors it reports (closing the transport, as tcpmux does).
    """

    def __init__(self):
        self.messages = []
        self.errors = []

    def messageReceived(self, message):
        self.messages.append(message)

    def framingError(self, reason, reply=None):
        self.errors.append(reason)
        self.transport.loseConnection()


def feed(receiverClass, *chunks):
    """
    A new C{receiverClass} on a string transport, fed C{chunks}.

    @return: C{(receiver, transport)}.
    """
    receiver = receiverClass()
    transport = StringTransport()
    receiver.makeConnection(transport)
    for chunk in chunks:
        receiver.dataReceived(chunk)
    return receiver, transport


def bytewise(data):
    return [data[i : i + 1] for i in range(len(data))]


def chunked(data, cuts):
    """
    C{data} cut at the given offsets (taken modulo its length).
    """
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


def buffered(receiver):
    """
    How many bytes C{receiver} holds waiting for the rest of a message.
    """
    pending = getattr(receiver, "_buffer", None)
    if pending is None:
        pending = receiver._unprocessed  # Twisted's IntNStringReceiver
    return len(pending)


def feedLikeAReactor(receiver, chunks):
    """
    Feed C{chunks} until the receiver closes its transport, as a reactor
    would, checking after each read that it buffers less than its
    C{maxMessageSize}.
    """
    for chunk in chunks:
        if receiver.transport.disconnecting:
            break
        receiver.dataReceived(chunk)
        assert buffered(receiver) < receiver.maxMessageSize, buffered(receiver)
