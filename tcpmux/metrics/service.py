# -*- test-case-name: tests.test_metrics -*-
"""
The metrics service: one web site (L{tcpmux.metrics.web}) for one or more
multiplexers, and the once-a-second sampling behind the status page.
"""

from twisted.application.service import Service
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tcpmux import __version__
from tcpmux.config import listenDescription, listenEndpoint
from tcpmux.metrics.prometheus import registryFor
from tcpmux.metrics.readings import MuxMetrics
from tcpmux.metrics.web import buildSite
from tcpmux.service import CannotListen


class MetricsService(Service):
    """
    Serves C{/metrics}, C{/healthz} and the status page on C{endpoint} for
    C{multiplexers}, and samples them every C{interval} seconds into a
    history of C{size} samples (the status page's chart).

    @ivar port: the listening port, once started.
    @ivar exitOnListenFailure: when the endpoint cannot be listened on, end
        the process with a one-line message (L{SystemExit}) rather than
        raise L{CannotListen} (for C{twistd -n}).
    """

    log = Logger()
    exitOnListenFailure = False
    port = None
    _listening = None
    _stopped = False

    def __init__(self, endpoint, multiplexers, clock=None, reactor=None, interval=1.0,
                 size=300):
        if reactor is None:
            from twisted.internet import reactor
        if clock is None:
            clock = reactor
        self.description = listenDescription(endpoint)
        self.endpoint = listenEndpoint(reactor, endpoint)
        self.clock = clock
        self.interval = interval
        self.muxes = [MuxMetrics(name, mux, size) for name, mux in multiplexers]
        self.registry = registryFor(self.muxes, clock)
        self.site = buildSite(self)
        self._sampler = LoopingCall(self.sample)
        self._sampler.clock = clock

    def sample(self):
        now = self.clock.seconds()
        for mux in self.muxes:
            mux.sample(now)

    def health(self):
        now = self.clock.seconds()
        muxes = [mux.health(now) for mux in self.muxes]
        return {"healthy": all(mux["healthy"] for mux in muxes), "muxes": muxes}

    def status(self):
        now = self.clock.seconds()
        return {
            "version": __version__,
            "time": round(now, 3),
            "interval": self.interval,
            "muxes": [mux.status(now) for mux in self.muxes],
        }

    # -- IService

    def privilegedStartService(self):
        # twistd listens here, before it sheds privileges.
        self._listen()
        Service.privilegedStartService(self)

    def startService(self):
        if self.port is None and self._listening is None:
            self._listen()
        Service.startService(self)
        self.sample()
        self._sampler.start(self.interval, now=False)
        self.log.info(
            "Serving metrics on {endpoint}: /metrics, /healthz and the status page /",
            endpoint=self.description,
        )

    def stopService(self):
        Service.stopService(self)
        self._stopped = True
        if self._sampler.running:
            self._sampler.stop()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()

    def _listen(self):
        failed = []
        self._listening = self.endpoint.listen(self.site)
        self._listening.addCallbacks(self._listened, failed.append)
        if failed:
            reason = failed[0].value
            if isinstance(reason, CannotListenError):
                reason = reason.socketError
                if isinstance(reason, OSError) and reason.strerror:
                    reason = reason.strerror.lower()
            message = f"cannot listen on {self.description} for metrics: {reason}"
            if self.exitOnListenFailure:
                raise SystemExit(message)
            raise CannotListen(message)

    def _listened(self, port):
        self._listening = None
        if not self.running and self._stopped:
            return port.stopListening()
        self.port = port
