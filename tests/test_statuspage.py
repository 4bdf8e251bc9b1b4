"""
The status page (C{--metrics}'s C{/}) in a real browser: Debian's
C{chromium}, driven by Playwright, while Modbus clients send requests
through two multiplexers, one of them in front of a device that is down.

The browser runs in a thread (Playwright's synchronous API blocks), the
reactor in the test's: the metrics site, tcpmux and the clients keep going
while the browser waits. A screenshot of the page is saved under the test's
temporary directory, and its path printed.
"""

import os
import shutil

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import TestCase

from tcpmux.metrics import makeMetricsService
from tests.faults import FaultTarget, answer, ask, connect
from tests.modbus import readRequest, readResponse
from tests.support import freePort, startMultiplexer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None


def card(name):
    return f'section.card[data-mux="{name}"]'


def text(page, mux, field):
    return page.inner_text(f'{card(mux)} [data-field="{field}"]').strip()


def waitForField(page, mux, field, condition, timeout=15000):
    """
    Wait until C{condition} (a JavaScript expression of C{t}, the field's
    text) holds for C{mux}'s card.
    """
    page.wait_for_function(
        """([selector, condition]) => {
            const el = document.querySelector(selector);
            if (!el) return false;
            const t = el.textContent.trim();
            return new Function("t", "return (" + condition + ");")(t);
        }""",
        arg=[f'{card(mux)} [data-field="{field}"]', condition],
        timeout=timeout,
    )


class StatusPageTests(TestCase):
    timeout = 180

    def setUp(self):
        # A missing browser is a failure, not a skip: .ci/run installs both.
        if sync_playwright is None:
            self.fail("playwright is not installed (pip install '.[test]')")
        if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
            self.fail("no chromium: apt-get install chromium (.ci/run does)")

    async def test_cards(self):
        """
        One card per multiplexer, with the numbers tcpmux counted: clients,
        round trips by outcome, the target's state; the rate and latency
        appear, and the numbers and chart follow the traffic without a
        reload.
        """
        device = FaultTarget("modbus", answer)
        port, inverter = await startMultiplexer(self, "modbus", device.listen(self))
        deadTarget = freePort()
        meterPort, meter = await startMultiplexer(
            self, "modbus", deadTarget, "--retry-delay", "60s"
        )
        service = makeMetricsService(
            "tcp:0:interface=127.0.0.1", [("inverter", inverter), ("meter", meter)]
        )
        service.startService()
        self.addCleanup(service.stopService)
        url = f"http://127.0.0.1:{service.port.getHost().port}/"

        clients = [await connect(self, port) for _ in range(3)]
        meterClient = await connect(self, meterPort)
        sent = {"ok": 0, "unavailable": 0}

        async def requests(count):
            # Each client in turn: every answer is the device's own.
            for n in range(count):
                client = clients[n % len(clients)]
                tid = sent["ok"] % 60000
                response = await ask(client, readRequest(tid, n % 100))
                assert response == readResponse(tid, n % 100), response
                sent["ok"] += 1

        async def meterRequests(count):
            for n in range(count):
                await ask(meterClient, readRequest(n, 0))
                sent["unavailable"] += 1

        def inReactor(coroutine, *args):
            return blockingCallFromThread(
                reactor, lambda: Deferred.fromCoroutine(coroutine(*args))
            )

        flowing = LoopingCall(lambda: Deferred.fromCoroutine(requests(5)))

        def startFlow():
            flowing.start(0.05)

        def stopFlow():
            if flowing.running:
                flowing.stop()

        self.addCleanup(stopFlow)
        screenshot = os.path.abspath(os.path.join(self.mktemp(), "status-page.png"))
        os.makedirs(os.path.dirname(screenshot))

        def browse():
            seen = {}
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS
                )
                try:
                    page = browser.new_page(viewport={"width": 1000, "height": 620})
                    errors = []
                    page.on("pageerror", lambda error: errors.append(str(error)))
                    page.goto(url)
                    page.wait_for_selector(card("inverter"), timeout=15000)
                    page.wait_for_selector(card("meter"), timeout=15000)
                    seen["cards"] = page.eval_on_selector_all(
                        "section.card", "cards => cards.map(c => c.dataset.mux)"
                    )
                    # Before any request.
                    seen["clients"] = text(page, "inverter", "clients")
                    seen["ok before"] = text(page, "inverter", "ok")
                    seen["meter clients"] = text(page, "meter", "clients")
                    seen["state"] = page.get_attribute(
                        f"{card('inverter')} tr[data-target]", "data-state"
                    )
                    seen["meter state"] = page.get_attribute(
                        f"{card('meter')} tr[data-target]", "data-state"
                    )
                    seen["meter health"] = text(page, "meter", "health")

                    # A known number of requests: the card shows exactly them.
                    inReactor(requests, 20)
                    inReactor(meterRequests, 2)
                    waitForField(page, "inverter", "ok", "t === '20'")
                    waitForField(page, "meter", "unavailable", "t === '2'")
                    seen["ok after 20"] = text(page, "inverter", "ok")
                    seen["meter unavailable"] = text(page, "meter", "unavailable")
                    seen["inverter errors"] = [
                        text(page, "inverter", kind)
                        for kind in ("timeout", "unavailable", "error")
                    ]
                    waitForField(page, "inverter", "p50", "t !== '\u2013'")
                    seen["p50"] = text(page, "inverter", "p50")
                    seen["p99"] = text(page, "inverter", "p99")

                    # Traffic flowing: the numbers move by themselves.
                    blockingCallFromThread(reactor, startFlow)
                    waitForField(page, "inverter", "rate", "parseFloat(t) > 0")
                    first = int(text(page, "inverter", "ok"))
                    waitForField(page, "inverter", "ok", f"parseInt(t) > {first}")
                    seen["moved"] = (first, int(text(page, "inverter", "ok")))
                    seen["rate"] = text(page, "inverter", "rate")
                    # A few seconds of chart.
                    page.wait_for_function(
                        """selector => {
                            const line = document.querySelector(selector);
                            return line && line.getAttribute("points").split(" ").length >= 3;
                        }""",
                        arg=f'{card("inverter")} [data-series="rate"] polyline',
                        timeout=15000,
                    )
                    seen["updates"] = int(page.get_attribute("body", "data-updates"))
                    blockingCallFromThread(reactor, stopFlow)
                    # Let the last requests finish, then the exact total.
                    total = inReactor(settled)
                    waitForField(page, "inverter", "ok", f"t === '{total}'")
                    seen["final"] = (total, text(page, "inverter", "ok"))
                    page.screenshot(path=screenshot, full_page=True)
                    seen["errors"] = errors
                finally:
                    browser.close()
            return seen

        async def settled():
            # The LoopingCall's last batch, if still running, finishes.
            before = -1
            while before != sent["ok"]:
                before = sent["ok"]
                await deferLater(reactor, 0.2)
            return sent["ok"]

        seen = await deferToThread(browse)
        print(f"\nstatus page screenshot: {screenshot}")
        self.assertEqual(seen["cards"], ["inverter", "meter"])
        self.assertEqual(seen["clients"], "3")
        self.assertEqual(seen["meter clients"], "1")
        self.assertEqual(seen["ok before"], "0")
        self.assertEqual(seen["state"], "connected")
        self.assertEqual(seen["meter state"], "down")
        self.assertEqual(seen["meter health"], "target down")
        self.assertEqual(seen["ok after 20"], "20")
        self.assertEqual(seen["meter unavailable"], "2")
        self.assertEqual(seen["inverter errors"], ["0", "0", "0"])
        self.assertGreater(float(seen["p99"]), 0)
        self.assertLessEqual(float(seen["p50"]), float(seen["p99"]))
        first, later = seen["moved"]
        self.assertGreater(later, first)
        self.assertGreater(float(seen["rate"]), 0)
        self.assertGreaterEqual(seen["updates"], 3)
        total, shown = seen["final"]
        self.assertEqual(shown, str(total))
        self.assertEqual(sent["unavailable"], 2)
        self.assertEqual(seen["errors"], [])
        self.assertTrue(os.path.getsize(screenshot) > 0)
