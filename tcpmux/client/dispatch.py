# -*- test-case-name: tests.test_gateway,tests.test_interfaces -*-
"""
Dispatchers: where a client's whole request goes.

The innermost dispatchers are the round-trip queues of the targets; with
C{--route}, L{Routes} hands each request to the queue of its target.
Gateways (L{tcpmux.interfaces.IDispatcher}s that wrap another) may answer a
request on the way or rewrite it; L{Answered} and L{Following} are the
round trips they give back.
"""

from twisted.internet.defer import Deferred
from zope.interface import implementer

from tcpmux.interfaces import IDispatcher, IRoundTrip


@implementer(IDispatcher)
class Routes:
    """
    Sends each request to the queue of its target: the default one, or the
    one its routing key names.

    @param default: the L{tcpmux.client.queue.RoundTripQueue} of the
        default target.
    @param routes: routing key -> the queue of another target.
    @param routingKey: request -> its routing key (the application
        protocol's C{routingKey}).
    """

    def __init__(self, default, routes=None, routingKey=None):
        self.default = default
        self.routes = dict(routes or {})
        self.routingKey = routingKey

    def __iter__(self):
        """
        Every queue, the default first.
        """
        yield self.default
        yield from self.routes.values()

    def dispatch(self, request, client, partReceived=None):
        queue = self.default
        if self.routes:
            queue = self.routes.get(self.routingKey(request), queue)
        return queue.dispatch(request, client, partReceived)


@implementer(IRoundTrip)
class Answered:
    """
    A round trip a gateway answered itself, without the target.
    """

    sent = True

    def __init__(self, result):
        self.result = result

    def withdraw(self):
        pass


class SharedAnswer:
    """
    One answer for several round trips (identical requests that share one
    fetch): each follower gets it through its own L{Following}.
    """

    def __init__(self, answer):
        """
        @param answer: a L{Deferred} of the one answer; it is consumed here.
        """
        self.answer = None
        self._followers = []
        answer.addBoth(self._answered)

    def follow(self, transform=None):
        """
        A new L{Following} round trip.

        @param transform: applied to the shared answer, for this follower
            (its own transaction id, say).
        """
        following = Following(transform)
        if self.answer is None:
            self._followers.append(following)
        else:
            following.answered(self.answer)
        return following

    def _answered(self, answer):
        self.answer = answer
        followers, self._followers = self._followers, []
        for following in followers:
            following.answered(answer)
        # Each follower has the failure, if any: this chain is done.
        return None


@implementer(IRoundTrip)
class Following:
    """
    A round trip that takes its answer from a L{SharedAnswer}. Withdrawing
    it withdraws nothing else: the others still want the answer.
    """

    sent = True

    def __init__(self, transform=None):
        self.result = Deferred()
        self._transform = transform

    def answered(self, answer):
        if self._transform is not None and isinstance(answer, bytes):
            answer = self._transform(answer)
        self.result.callback(answer)

    def withdraw(self):
        pass
