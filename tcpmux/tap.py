# -*- test-case-name: tests.test_config -*-
"""
C{twistd tcpmux}: command-line options and the service they describe.
"""

import sys

from twisted.python import usage

from tcpmux import protocols, versions
from tcpmux.client.queue import DUMP_BYTES
from tcpmux.config import (
    listenDescription,
    listenEndpoint,
    parseCount,
    parseDuration,
    parseSize,
    targetEndpoint,
)
from tcpmux.multiplexer import Multiplexer
from tcpmux.service import MultiplexerService
from tcpmux.target.factory import TargetClientFactory
from tcpmux.target.pool import TargetPool


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Share one connection to a target among many clients. Each client's "
        "bytes are cut into whole requests by the application protocol's "
        "framer; one request/response round trip at a time crosses the "
        "single target connection, and each response goes back to the "
        "client that asked. Durations are seconds, or a number with ms, s, "
        "m or h (500ms, 2s, 1m)."
    )

    optParameters = [
        ["protocol", "p", "echo",
         "Application protocol that frames messages (see --list-protocols)."],
        ["listen", "l", "8000",
         "Where clients connect: a port number, or a Twisted server endpoint "
         "string (tcp:5020:interface=127.0.0.1, tcp6:5020, unix:/run/mux.sock)."],
        ["target", "t", None,
         "Required. The target: host:port, [v6addr]:port, or a Twisted client "
         "endpoint string (tcp:host=10.0.0.5:port=502, unix:path=/run/dev.sock)."],
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
    ]

    optFlags = [
        ["verbose", "v",
         f"Log the size and a hex dump of every message (its first "
         f"{DUMP_BYTES} bytes) and the time of each round trip."],
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
    }
    _counts = ("max-queue", "max-clients", "connections", "pipeline")
    _sizes = ("max-client-buffer",)

    _failed = False

    def parseOptions(self, options=None):
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

    def postOptions(self):
        from twisted.internet import reactor

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
        try:
            listenEndpoint(reactor, self["listen"])
            targetEndpoint(reactor, self["target"], self["timeout"])
        except ValueError as e:
            raise usage.UsageError(str(e))

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


def makeService(options):
    """
    One L{MultiplexerService}: C{--listen} -> C{--target}, over one target
    connection or a L{TargetPool} of C{--connections}.
    """
    from twisted.internet import reactor

    application = protocols.get(options["protocol"])
    # The multiplexer's queue enforces --timeout on every request and
    # cancels the round trip when it expires; the target has no timer.
    targets = [
        TargetClientFactory(
            targetEndpoint(reactor, options["target"], options["timeout"]),
            application,
            name=options["target"],
            timeout=options["timeout"],
            delay=options["delay"],
            retryDelay=options["retry-delay"],
            maxRetryDelay=options["max-retry-delay"],
            pipeline=options["pipeline"],
        )
        for _ in range(options["connections"])
    ]
    if len(targets) == 1:
        target = targets[0]
    else:
        target = TargetPool(targets)
    multiplexer = Multiplexer(
        application,
        target,
        maxQueue=options["max-queue"],
        maxClientBuffer=options["max-client-buffer"],
        maxClients=options["max-clients"],
        verbose=options["verbose"],
        timeout=options["timeout"],
        clientTimeout=options["client-timeout"] or None,
        idleClose=options["idle-close"] or None,
    )
    # Run by twistd, the options' parent is twistd's own.
    twistd = options.parent
    return MultiplexerService(
        listenDescription(options["listen"]),
        multiplexer,
        exitCleanlyOnSIGTERM=True,
        exitOnListenFailure=twistd is not None and bool(twistd["nodaemon"]),
    )
