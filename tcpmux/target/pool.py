# -*- test-case-name: tests.test_concurrency -*-
"""
Several connections to one target, for targets that accept more than one
(C{--connections}).
"""

from twisted.internet.defer import gatherResults
from zope.interface import implementer

from tcpmux.interfaces import ITarget


@implementer(ITarget)
class TargetPool:
    """
    An L{ITarget} that spreads round trips over C{factories} (each an
    L{ITarget} with one connection), each carrying at most its own
    C{concurrency} round trips at a time.

    A ready connection with room is preferred; only when none has room does
    a round trip go to a connection that is not ready yet (it then waits for
    that connection, or fails as the single connection would).
    """

    def __init__(self, factories):
        self.factories = list(factories)
        self.name = self.factories[0].name
        self.concurrency = sum(factory.concurrency for factory in self.factories)
        self._load = {factory: 0 for factory in self.factories}

    def start(self):
        for factory in self.factories:
            factory.start()

    def stop(self):
        return gatherResults([factory.stop() for factory in self.factories])

    def release(self):
        for factory in self.factories:
            factory.release()

    def roundTrip(self, request, deadline=None, partReceived=None):
        factory = self._choose()
        self._load[factory] += 1
        result = factory.roundTrip(request, deadline, partReceived)
        result.addBoth(self._done, factory)
        return result

    def _choose(self):
        # The queue lets at most self.concurrency round trips in, so some
        # factory always has room.
        withRoom = [f for f in self.factories if self._load[f] < f.concurrency]
        for factory in withRoom:
            if factory.ready:
                return factory
        return withRoom[0]

    def _done(self, result, factory):
        self._load[factory] -= 1
        return result
