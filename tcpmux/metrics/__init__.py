# -*- test-case-name: tests.test_metrics -*-
"""
Metrics, health and a live status page (C{--metrics ENDPOINT}).

The core keeps plain counters (L{tcpmux.metrics.counters}) whether or not
they are served; L{makeMetricsService} serves them, on one C{twisted.web}
site:

  - C{/metrics}: Prometheus's text format, labelled C{mux};
  - C{/healthz}: JSON per multiplexer, status 200 when every target is
    reachable, 503 otherwise;
  - C{/}: a status page, one card per multiplexer, updated every second
    from C{/status.json}.

Serving needs C{prometheus_client}: C{pip install 'tcpmux[metrics]'}.
"""

EXTRA = "pip install 'tcpmux[metrics]'"


class MetricsUnavailable(Exception):
    """
    C{prometheus_client}, which serving metrics needs, is not installed. Its
    message is one line that says how to install it.
    """


def checkAvailable():
    """
    @raise MetricsUnavailable: if C{prometheus_client} is not installed.
    """
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MetricsUnavailable(
            f"metrics need the prometheus_client package: {EXTRA}"
        ) from None


def makeMetricsService(endpoint, multiplexers, clock=None):
    """
    The service serving C{/metrics}, C{/healthz} and the status page for
    C{multiplexers} on C{endpoint}.

    @param endpoint: a Twisted server endpoint string
        (C{tcp:9102:interface=127.0.0.1}), or a port number.
    @param multiplexers: a list of C{(name, multiplexer)}: C{name} is the
        C{mux} label (the config file's C{name}, else the listen address),
        C{multiplexer} a L{tcpmux.multiplexer.Multiplexer}.
    @return: an L{twisted.application.service.IService}; it listens when
        started (in C{privilegedStartService} under twistd), and samples the
        multiplexers every second for the status page until stopped.
    @raise MetricsUnavailable: if C{prometheus_client} is not installed.
    @raise ValueError: if C{endpoint} is no valid endpoint description.
    """
    checkAvailable()
    from tcpmux.metrics.service import MetricsService

    return MetricsService(endpoint, list(multiplexers), clock=clock)
