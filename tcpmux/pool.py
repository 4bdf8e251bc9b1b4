# -*- test-case-name: tests.test_concurrency -*-
"""
Several connections to one target, for targets that accept more than one.

A L{TargetPool} offers the same interface as a single
L{tcpmux.target.TargetClientFactory} (C{start}, C{stop}, C{roundTrip}) and
says how many round trips it can carry at once (C{concurrency}); the
multiplexer sizes its queue's semaphore to that.
"""

from twisted.internet.defer import gatherResults


class TargetPool:
    """
    Spreads round trips over C{factories}, each connection carrying at most
    C{capacity} round trips at a time (1, or the pipeline depth).

    A ready connection with room is preferred; only when none has room does a
    round trip go to a connection that is not ready yet (it then waits for
    that connection, or fails as the single connection would).
    """

    def __init__(self, factories, capacity=1):
        self.factories = list(factories)
        self.capacity = capacity
        self.concurrency = len(self.factories) * capacity
        self.timeout = self.factories[0].timeout
        self.name = self.factories[0].name
        self._load = {factory: 0 for factory in self.factories}

    def start(self):
        for factory in self.factories:
            factory.start()

    def stop(self):
        return gatherResults([factory.stop() for factory in self.factories])

    def release(self):
        for factory in self.factories:
            factory.release()

    def roundTrip(self, request, interim=None, deadline=None):
        factory = self._choose()
        self._load[factory] += 1
        result = factory.roundTrip(request, interim, deadline)
        result.addBoth(self._done, factory)
        return result

    def _choose(self):
        fallback = None
        for factory in self.factories:
            if self._load[factory] < self.capacity:
                if factory.connection is not None:
                    return factory
                if fallback is None:
                    fallback = factory
        if fallback is None:
            # The multiplexer's semaphore never lets more than concurrency
            # round trips in; should that change, share the least loaded.
            fallback = min(self.factories, key=self._load.__getitem__)
        return fallback

    def _done(self, result, factory):
        self._load[factory] -= 1
        return result
