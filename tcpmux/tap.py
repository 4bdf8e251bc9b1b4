# -*- test-case-name: tests.test_config -*-
"""
C{twistd tcpmux}: command-line options and the service they describe.
"""

import sys

from twisted.application.service import MultiService
from twisted.python import usage

from tcpmux import logs, protocols, versions
from tcpmux.client.queue import DUMP_BYTES
from tcpmux.config import (
    isSerial,
    listenDescription,
    listenEndpoint,
    parseCount,
    parseDuration,
    parseSize,
    targetEndpoint,
)
from tcpmux.gateway.options import (
    BROADCAST,
    parseReadOnly,
    parseRetries,
    parseRoute,
    parseUnitMap,
)
from tcpmux.multiplexer import Multiplexer
from tcpmux.service import MultiplexerService
from tcpmux.target.factory import TargetClientFactory
from tcpmux.target.pool import TargetPool
from tcpmux.target.wrapper import SpacedTarget

# What only a feature needs (the Modbus gateway, the read cache, --allow,
# TLS, metrics) is imported where that feature is used, so that a plain run
# does not carry it in memory (issue 15). tcpmux.gateway.cache.DEFAULT_ITEMS,
# repeated here so that --help need not import the cache (a test checks
# that the two agree).
DEFAULT_CACHE_ITEMS = 100_000


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Share one connection to a target among many clients. Each client's "
        "bytes are cut into whole requests by the application protocol's "
        "framer; one request/response round trip at a time crosses the "
        "single target connection, and each response goes back to the "
        "client that asked. Durations are seconds, or a number with us, ms, "
        "s, m or h (100us, 500ms, 2s, 1m)."
    )

    optParameters = [
        ["config", None, None,
         "Run every listener -> target pair of this TOML file: [[mux]] "
         "tables whose keys are these options' long names, and a top-level "
         "metrics (see examples/tcpmux.toml). No other option may be given "
         "with it."],
        ["protocol", "p", "echo",
         "Application protocol that frames messages (see --list-protocols)."],
        ["listen", "l", "8000",
         "Where clients connect: a port number, or a Twisted server endpoint "
         "string (tcp:5020:interface=127.0.0.1, tcp6:5020, unix:/run/mux.sock). "
         "Up to 1024 connections may wait to be accepted, unless it says "
         "backlog=N."],
        ["target", "t", None,
         "Required. The target: host:port, [v6addr]:port, or a Twisted client "
         "endpoint string (tcp:host=10.0.0.5:port=502, unix:path=/run/dev.sock), "
         "or a serial port (serial:/dev/ttyUSB0:baudrate=9600:parity=E)."],
        ["name", None, None,
         "A name for this listener -> target pair in log lines and metrics "
         "(default: its listen address)."],
        ["allow", None, None,
         "CIDR[,CIDR...]: accept clients only from these IPv4 or IPv6 "
         "networks or addresses (192.168.1.0/24,10.0.0.5,fd00::/8); a "
         "client from any other address is closed at once, before a byte "
         "is read, logged and counted (default: everyone)."],
        ["tls-client-ca", None, None,
         "With an ssl: --listen: require every client to present a "
         "certificate signed by a CA in this PEM file; others fail the TLS "
         "handshake."],
        ["metrics", None, None,
         "Serve Prometheus metrics (/metrics), a health check (/healthz: "
         "200 when the target is connected, else 503) and a live status "
         "page (/) on this endpoint, such as tcp:9102:interface=127.0.0.1 "
         "(needs: pip install 'tcpmux[metrics]')."],
        ["timeout", None, 60.0,
         "Connect timeout, and the longest a client waits for the answer "
         "to a request once it is the client's next to go (waiting for its "
         "turn, for a connection and for the target all count); then it "
         "gets an error and the target connection is renewed."],
        ["delay", None, 0.0,
         "Wait this long after every (re)connect to the target before "
         "sending the first request."],
        ["retry-delay", None, 1.0,
         "First delay before reconnecting to the target; it grows about "
         "2.7x per failed attempt up to --max-retry-delay."],
        ["max-retry-delay", None, 30.0,
         "Longest delay between reconnect attempts."],
        ["max-queue", None, 32,
         "Whole requests one client may have waiting; beyond it tcpmux "
         "stops reading that client until its queue drains."],
        ["max-client-buffer", None, 4 * 1024 * 1024,
         "Answer bytes tcpmux may hold for one client that is not reading "
         "them (KB, MB, KiB, MiB); a client over it is dropped, and the rest "
         "of its answer read from the target and discarded, so that nobody "
         "else waits for it."],
        ["max-clients", None, 1024,
         "Clients connected at once; another is closed at once."],
        ["connections", None, 1,
         "Connections to keep to the target, for targets that accept more "
         "than one; round trips are spread over them, each connection "
         "still carrying one at a time."],
        ["pipeline", None, 1,
         "Requests in flight at once on each target connection (modbus "
         "only; the device must answer pipelined requests: most do not). "
         "Transaction ids are always rewritten to be unique on the "
         "connection and mapped back to each client's own."],
        ["client-timeout", None, 0.0,
         "Close a client that had nothing in progress this long: no whole "
         "request received and no answer owed. A request still incomplete "
         "after this long closes its client too (0: never)."],
        ["idle-close", None, 0.0,
         "Close the target connection once no client has been connected "
         "this long, and re-open it when one connects (0: keep it open; it "
         "is opened at start either way)."],
        ["busy-poll", None, "100us",
         "While bytes are due within this long, poll for them instead of "
         "sleeping: a target's answer, when its last answer came within that "
         "time, and the next request of a client that sent its last one that "
         "soon after its answer. Waking up costs tens of microseconds (more "
         "on virtual machines), as much as a whole round trip to a fast "
         "target. Slower targets and clients are waited for asleep, as with "
         "0 (off), and polling pauses while the proxy is too busy to sleep."],
        ["request-gap", None, 0.0,
         "Leave at least this long between the end of one answer and the "
         "next request written to a target, for all clients together "
         "(devices that drop requests sent too soon; 0: no gap)."],
        ["unit-map", None, None,
         "Modbus: CLIENT=DEVICE[,CLIENT=DEVICE...]: a request for unit "
         "CLIENT goes to the device as unit DEVICE, and its answer comes "
         "back as CLIENT (1=0: clients ask for 1, the device is 0). Other "
         "units pass unchanged; --route and --read-only use the client's "
         "unit."],
        ["read-only", None, "off",
         "Modbus: off, deny or ignore. deny answers every write (function "
         "codes 5, 6, 15, 16, 21, 22, 23) with exception 0x01; ignore "
         "answers 5, 6, 15 and 16 as the device would have, and denies the "
         "others. No write reaches the device. deny:1,2 or ignore:1,2: for "
         "those client unit ids only."],
        ["retries", None, 0,
         "Modbus: send a read (function codes 1-4) again, up to this many "
         "times, when an attempt gets no answer within --attempt-timeout, "
         "loses its connection, gets a bad frame or CRC, or exception 0x06 "
         "(device busy), while --timeout allows. Writes and vendor function "
         "codes are never sent twice."],
        ["attempt-timeout", None, None,
         "Modbus, with --retries: how long one attempt of a read may take "
         "before it is abandoned (the connection renewed) and sent again "
         "(default: --timeout, so only fast failures are retried)."],
        ["target-framing", None, None,
         "Modbus: rtu when the target speaks Modbus RTU (address, PDU, "
         "CRC-16) while clients speak Modbus TCP, as an RS-485-to-Ethernet "
         "converter in transparent mode does: tcpmux converts both ways. "
         "same (the default): the target speaks what clients speak. "
         "serial: targets (serial:/dev/ttyUSB0:baudrate=9600:parity=E) are "
         "always rtu."],
        ["cache-ttl", None, 0.0,
         "Modbus: answer a read of coils, inputs or registers (function "
         "codes 1-4) from values read from the device less than this long "
         "ago, per unit and address, whatever read brought them; a write "
         "through tcpmux forgets the items it touches. Identical reads on "
         "their way share one round trip. Values may be up to this old "
         "(0: no cache)."],
        ["cache-stale", None, 0.0,
         "Modbus, with --cache-ttl: answer a read that fails (no connection, "
         "no answer) from cached values up to this old instead of 0x0A/0x0B "
         "(0: never)."],
        ["cache-items", None, DEFAULT_CACHE_ITEMS,
         "Modbus, with --cache-ttl: the most values (registers and coils) "
         "kept; the least recently read are forgotten first (about 230 bytes "
         "each)."],
    ]

    optFlags = [
        ["verbose", "v",
         f"Log the size and a hex dump of every message (its first "
         f"{DUMP_BYTES} bytes) and the time of each round trip."],
        ["cache-warm", None,
         "Modbus, with --cache-ttl: a read answered from values older than "
         "half the TTL is also sent to the device in the background, so "
         "that clients polling at least that often never wait for it."],
    ]

    # What each value means, checked and converted in postOptions, where a
    # mistake can be reported with the option's name.
    _durations = {
        # name: whether 0 is allowed
        "timeout": False,
        "delay": True,
        "retry-delay": False,
        "max-retry-delay": False,
        "client-timeout": True,
        "idle-close": True,
        "request-gap": True,
        "busy-poll": True,
        "cache-ttl": True,
        "cache-stale": True,
    }
    _counts = ("max-queue", "max-clients", "connections", "pipeline", "cache-items")
    _sizes = ("max-client-buffer",)

    _failed = False
    _argv = ()

    # The parsed config file (tcpmux.configfile.Config) with --config.
    config = None

    def parseOptions(self, options=None):
        if options is None:
            options = sys.argv[1:]
        # (Kept for --config, which must come alone: see postOptions.)
        self._argv = options
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError:
            self._failed = True
            raise

    def getUsage(self, width=None):
        if self._failed:
            # twistd prints this before the error itself: a pointer, not
            # seventy lines of help above the one line that matters.
            return "Run 'twistd tcpmux --help' for tcpmux's options.\n"
        return usage.Options.getUsage(self, width)

    def opt_version(self):
        """
        Print tcpmux's version (and Twisted's) and exit.
        """
        print(versions())
        sys.exit(0)

    def opt_applicationProtocol(self, name):
        """
        Same as --protocol (the original tool's spelling).
        """
        self["protocol"] = name

    def opt_targetServer(self, address):
        """
        Same as --target (the original tool's spelling).
        """
        self["target"] = address

    def opt_list_protocols(self):
        """
        List the application protocols and exit.
        """
        for name in protocols.names():
            print(f"{name:15} {protocols.get(name).description}")
        sys.exit(0)

    def opt_route(self, route):
        """
        Modbus: UNIT=TARGET (repeatable): requests for unit UNIT (as the
        client writes it) go to TARGET (host:port or an endpoint string),
        over that target's own connection(s) and queue, so that a slow or
        dead device holds up no other; other units go to --target.
        --connections, --pipeline, --delay, --request-gap, --retries and
        --unit-map apply to each target.
        """
        self.setdefault("route", []).append(route)

    # (--help shows a docstring as it is written.)
    opt_route.__doc__ = " ".join(opt_route.__doc__.split())

    def postOptions(self):
        from twisted.internet import reactor

        if self["config"] is not None:
            # (Imported only here: a run without a config file needs none of
            # it.) Each table is parsed by Options of its own.
            from tcpmux import configfile

            configfile.checkAlone(self, self._argv)
            self.config = configfile.load(self["config"], Options)
            return
        self._convert()
        try:
            application = protocols.get(self["protocol"])
        except protocols.UnknownProtocol as e:
            raise usage.UsageError(str(e))
        if self["pipeline"] > 1 and application.pipelining is None:
            raise usage.UsageError(
                f"--pipeline needs a protocol whose responses name the request "
                f"they answer (modbus); {application.name} has none"
            )
        if self["target"] is None:
            raise usage.UsageError(
                "--target is required: the target's host:port, such as "
                "--target 192.0.2.10:502"
            )
        if mayUseRTU(self):
            from tcpmux.gateway import rtu

            try:
                rtu.checkOptions(application, self)
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
        try:
            listenEndpoint(reactor, self["listen"], self["tls-client-ca"])
            targetEndpoint(reactor, self["target"], self["timeout"])
        except ValueError as e:
            raise usage.UsageError(str(e))
        self._checkAllow()
        self._checkGateway(application, reactor)
        self._checkMetrics(reactor)
        self._checkCache(application)

    def _checkAllow(self):
        """
        C{--allow}, as a tuple of networks; for listeners whose clients have
        an IP address.
        """
        if self["allow"] is None:
            return
        from tcpmux.client.access import parseAllow

        try:
            self["allow"] = parseAllow(self["allow"])
        except ValueError as e:
            raise usage.UsageError(f"--allow: {e}") from None
        if listenDescription(self["listen"]).lower().startswith("unix:"):
            raise usage.UsageError(
                "--allow is for clients with an IP address; a unix: listener's "
                "are let in by the socket file's permissions"
            )

    def _checkCache(self, application):
        """
        C{--cache-ttl} and its companions: Modbus only, and the others need
        C{--cache-ttl}.
        """
        used = [
            name
            for name, value in (
                ("cache-ttl", self["cache-ttl"]),
                ("cache-stale", self["cache-stale"]),
                ("cache-warm", self["cache-warm"]),
                ("cache-items", self["cache-items"] != DEFAULT_CACHE_ITEMS),
            )
            if value
        ]
        if used and not protocols.isModbus(application):
            raise usage.UsageError(
                f"--{used[0]} is for Modbus (--protocol modbus, modbus-rtu or "
                f"modbus-serial): {application.name} has no registers to cache"
            )
        if used and not self["cache-ttl"]:
            raise usage.UsageError(
                f"--{used[0]} needs --cache-ttl: without it nothing is cached"
            )

    def _checkMetrics(self, reactor):
        """
        C{--metrics}: an endpoint to listen on, and C{prometheus_client}
        installed.
        """
        if self.get("metrics") is None:
            return
        from tcpmux.metrics import MetricsUnavailable, checkAvailable

        try:
            checkAvailable()
            listenEndpoint(reactor, self["metrics"])
        except (MetricsUnavailable, ValueError) as e:
            raise usage.UsageError(f"--metrics: {e}") from None

    def _checkGateway(self, application, reactor):
        """
        The Modbus gateway's options (L{tcpmux.gateway.options}), checked and
        converted: C{unit-map} a dict, C{route} a dict of unit -> target,
        C{read-only} a (mode, units or None) pair, C{retries} a number,
        C{attempt-timeout} seconds. A mistake is a usage error that names
        the option.
        """
        def parsed(name, parse, value):
            try:
                return parse(value)
            except ValueError as e:
                raise usage.UsageError(f"--{name}: {e}") from None

        unitMap = {}
        if self["unit-map"] is not None:
            unitMap = parsed("unit-map", parseUnitMap, self["unit-map"])
        routes = {}
        for text in self.get("route") or ():
            unit, target = parsed("route", parseRoute, text)
            if unit in routes:
                raise usage.UsageError(f"--route: unit {unit} is routed twice")
            try:
                targetEndpoint(reactor, target, self["timeout"])
            except ValueError as e:
                raise usage.UsageError(f"--route {text}: {e}") from None
            routes[unit] = target
        readOnly = parsed("read-only", parseReadOnly, self["read-only"])
        retries = parsed("retries", parseRetries, self["retries"])
        attemptTimeout = self["attempt-timeout"]
        if attemptTimeout is not None:
            try:
                attemptTimeout = parseDuration(attemptTimeout)
            except ValueError:
                attemptTimeout = 0
            if not attemptTimeout:
                raise usage.UsageError(
                    f"--attempt-timeout must be a positive duration: seconds, or "
                    f"a number with ms, s, m or h (500ms, 2s), not "
                    f"{self['attempt-timeout']!r}"
                )
            if not retries:
                raise usage.UsageError(
                    "--attempt-timeout is the time of one attempt of a read: "
                    "it needs --retries 1 or more"
                )
            if attemptTimeout > self["timeout"]:
                raise usage.UsageError(
                    f"--attempt-timeout ({attemptTimeout:g}s) must not be longer "
                    f"than --timeout ({self['timeout']:g}s), which ends every attempt"
                )
        used = [
            name
            for name, value in (
                ("unit-map", unitMap),
                ("route", routes),
                ("read-only", readOnly[0] != "off"),
                ("retries", retries),
                ("attempt-timeout", attemptTimeout),
            )
            if value
        ]
        if used and not protocols.isModbus(application):
            raise usage.UsageError(
                f"--{used[0]} is for Modbus (--protocol modbus, modbus-rtu or "
                f"modbus-serial): {application.name} requests have no unit id "
                f"or function code"
            )
        if application.name == "modbus-serial":
            zero = BROADCAST
            if zero in unitMap or zero in unitMap.values() or zero in routes:
                name = "route" if zero in routes else "unit-map"
                raise usage.UsageError(
                    f"--{name}: with modbus-serial, unit 0 is the broadcast "
                    f"address, which no device answers"
                )
        self["unit-map"] = unitMap
        self["route"] = routes
        self["read-only"] = readOnly
        self["retries"] = retries
        self["attempt-timeout"] = attemptTimeout or self["timeout"]

    def _convert(self):
        """
        Durations, counts and sizes from what the user wrote; a mistake is
        a usage error that names the option.
        """
        for name, zeroAllowed in self._durations.items():
            try:
                value = parseDuration(self[name])
            except ValueError:
                value = None
            if value is None or (value == 0 and not zeroAllowed):
                kind = "0 or a positive duration" if zeroAllowed else "a positive duration"
                raise usage.UsageError(
                    f"--{name} must be {kind}: seconds, or a number with ms, s, "
                    f"m or h (500ms, 2s, 1m), not {self[name]!r}"
                )
            self[name] = value
        for name in self._counts:
            try:
                self[name] = parseCount(self[name])
            except ValueError:
                raise usage.UsageError(
                    f"--{name} must be a whole number of 1 or more, not {self[name]!r}"
                ) from None
        for name in self._sizes:
            try:
                self[name] = parseSize(self[name])
            except ValueError:
                raise usage.UsageError(
                    f"--{name} must be a size of 1 byte or more: bytes, or a number "
                    f"with KB, MB, GB, KiB, MiB or GiB (64KiB, 4MB), not {self[name]!r}"
                ) from None


def buildTarget(reactor, application, options, address):
    """
    The L{tcpmux.interfaces.ITarget} for the target at C{address} (C{--target}
    or a C{--route}'s): one connection or a L{TargetPool} of
    C{--connections}, each pipelined C{--pipeline} deep, behind the
    C{--request-gap} and, for Modbus, C{--retries} and C{--unit-map}.
    """
    # The multiplexer's queue enforces --timeout on every request and
    # cancels the round trip when it expires; the target has no timer.
    rtuTarget = False
    if mayUseRTU(options):
        from tcpmux.gateway import rtu

        rtuTarget = rtu.isRTU(application, options, address)
    connections = [
        (rtu.RTUConnection if rtuTarget else TargetClientFactory)(
            targetEndpoint(reactor, address, options["timeout"]),
            application,
            name=address,
            timeout=options["timeout"],
            delay=options["delay"],
            retryDelay=options["retry-delay"],
            maxRetryDelay=options["max-retry-delay"],
            pipeline=options["pipeline"],
        )
        for _ in range(options["connections"])
    ]
    if len(connections) == 1:
        target = connections[0]
    else:
        target = TargetPool(connections)
    if rtuTarget:
        # RTU frames, and the line's silence, behind everything else.
        target = rtu.wrapTarget(
            target, application, connections[0].connector.endpoint, reactor
        )
    if options["request-gap"]:
        target = SpacedTarget(target, options["request-gap"], reactor)
    if (options["retries"] or options["unit-map"]) and protocols.isModbus(application):
        from tcpmux.gateway import modbus as gateway

        # Inside the unit map, outside the gap: a retry is the device's own
        # request again, and waits its gap like any other.
        if options["retries"]:
            target = gateway.RetriedReads(
                target,
                application.frames,
                options["retries"],
                options["attempt-timeout"],
                reactor,
            )
        if options["unit-map"]:
            target = gateway.UnitMap(target, application.frames, options["unit-map"])
    return target


def mayUseRTU(options):
    """
    Whether a target may speak Modbus RTU (C{--target-framing}, or a
    C{serial:} target or route), so that a run with none never imports the
    RTU gateway.
    """
    if options.get("target-framing") is not None:
        return True
    routes = options.get("route") or ()
    if isinstance(routes, dict):
        addresses = list(routes.values())
    else:
        # Still as given: UNIT=TARGET.
        addresses = [str(route).partition("=")[2] for route in routes]
    addresses.append(options["target"])
    return any(isSerial(address) for address in addresses if address is not None)


def makeMultiplexerService(options):
    """
    One L{MultiplexerService}: C{--listen} -> C{--target} (and each
    C{--route}'s target), each built by L{buildTarget}; one of a config
    file's C{[[mux]]} tables.
    """
    from twisted.internet import reactor

    application = protocols.get(options["protocol"])
    target = buildTarget(reactor, application, options, options["target"])
    routes = {
        unit: buildTarget(reactor, application, options, address)
        for unit, address in options["route"].items()
    }
    # Dispatchers in front of the queues, innermost first.
    gateways = []
    readOnly, units = options["read-only"]
    if readOnly != "off":
        from tcpmux.gateway import modbus as gateway
        from tcpmux.gateway import rtu

        gateways.append(
            lambda inner: gateway.ReadOnly(
                inner, application.frames, readOnly, units,
                silentBroadcast=rtu.silentBroadcast(application, options),
            )
        )
    cache = None
    if options["cache-ttl"]:
        from tcpmux.gateway.cache import ModbusCache

        # Outermost: a hit waits for nothing, and the cache sees the unit
        # id the client wrote.
        cache = ModbusCache(
            application.frames,
            reactor,
            options["cache-ttl"],
            stale=options["cache-stale"],
            maxItems=options["cache-items"],
            warm=options["cache-warm"],
        )
        gateways.append(cache)
    multiplexer = Multiplexer(
        application,
        target,
        routes=routes,
        gateways=gateways,
        maxQueue=options["max-queue"],
        maxClientBuffer=options["max-client-buffer"],
        maxClients=options["max-clients"],
        verbose=options["verbose"],
        timeout=options["timeout"],
        clientTimeout=options["client-timeout"] or None,
        idleClose=options["idle-close"] or None,
        busyPoll=options["busy-poll"],
    )
    multiplexer.cache = cache  # (its counters, for tests and metrics)
    listen = listenDescription(options["listen"])
    # In log lines and as metrics' mux label: --name, else the listen address.
    multiplexer.name = options["name"] or listen
    logs.nameMux(multiplexer.name, multiplexer)
    multiplexer.clients.allow = options["allow"]
    endpoint = listenEndpoint(reactor, options["listen"], options["tls-client-ca"])
    # Run by twistd, the options' parent is twistd's own.
    twistd = options.parent
    service = MultiplexerService(
        listen,
        multiplexer,
        exitCleanlyOnSIGTERM=True,
        exitOnListenFailure=twistd is not None and bool(twistd["nodaemon"]),
        endpoint=endpoint,
    )
    if options.get("metrics") is not None:
        from tcpmux.metrics import makeMetricsService

        name = getattr(multiplexer, "name", None) or service.listen
        metrics = makeMetricsService(options["metrics"], [(name, multiplexer)])
        metrics.exitOnListenFailure = service.exitOnListenFailure
        metrics.setServiceParent(service)
    return service


def makeService(options):
    """
    What C{twistd tcpmux} runs: the L{MultiplexerService} of the command
    line's options; with C{--config}, a L{MultiService} of one per
    C{[[mux]]} table (each named by its table's C{name}, else its listen
    address) and, for the file's top-level C{metrics}, the metrics service
    of them all.
    """
    config = options.config
    if config is None:
        return makeMultiplexerService(options)
    top = MultiService()
    services = []
    for mux in config.muxes:
        # Each table's options, as if twistd had parsed them.
        mux.parent = options.parent
        service = makeMultiplexerService(mux)
        service.setName(service.muxName)
        service.setServiceParent(top)
        services.append(service)
    if config.metrics is not None:
        # The metrics hand-off for a config file: one site for every mux.
        from tcpmux.metrics import makeMetricsService

        metrics = makeMetricsService(
            config.metrics,
            [(service.muxName, service.multiplexer) for service in services],
        )
        metrics.exitOnListenFailure = services[0].exitOnListenFailure
        metrics.setServiceParent(top)
    return top
