# -*- test-case-name: tests.test_metrics -*-
"""
The C{--metrics} web site: C{/metrics} (Prometheus), C{/healthz} (JSON,
200 or 503), C{/} (the status page) and C{/status.json} (what the page
reads every second).
"""

import json
import os

from twisted.web.resource import Resource
from twisted.web.server import Site

STATUS_PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "status.html")


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, service):
        Resource.__init__(self)
        self.service = service

    def respond(self, request, body, contentType, code=200):
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", contentType)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return body

    def json(self, request, value, code=200):
        body = json.dumps(value, separators=(",", ":")).encode("utf-8")
        return self.respond(request, body, b"application/json", code)

    def render_HEAD(self, request):
        return self.render_GET(request)


class Metrics(_Leaf):
    def render_GET(self, request):
        from tcpmux.metrics.prometheus import CONTENT_TYPE_LATEST, exposition

        body = exposition(self.service.registry)
        return self.respond(request, body, CONTENT_TYPE_LATEST.encode("ascii"))


class Health(_Leaf):
    def render_GET(self, request):
        health = self.service.health()
        return self.json(request, health, 200 if health["healthy"] else 503)


class Status(_Leaf):
    def render_GET(self, request):
        return self.json(request, self.service.status())


class StatusPage(_Leaf):
    def render_GET(self, request):
        with open(STATUS_PAGE, "rb") as f:
            page = f.read()
        return self.respond(request, page, b"text/html; charset=utf-8")


class MetricsSite(Site):
    """
    The site, without an access log line per request: Prometheus scrapes
    and the status page polls every few seconds.
    """

    noisy = False

    def log(self, request):
        pass


def buildSite(service):
    root = Resource()
    root.putChild(b"", StatusPage(service))
    root.putChild(b"metrics", Metrics(service))
    root.putChild(b"healthz", Health(service))
    root.putChild(b"status.json", Status(service))
    return MetricsSite(root)
