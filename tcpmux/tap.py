# -*- test-case-name: tests.test_tap -*-
"""
C{twistd tcpmux}: command-line options and the service they describe.
"""

import sys

from twisted.python import usage

from tcpmux import protocols
from tcpmux.config import (
    listenDescription,
    listenEndpoint,
    parseCount,
    parseDuration,
    targetEndpoint,
)
from tcpmux.multiplexer import Multiplexer
from tcpmux.service import MultiplexerService
from tcpmux.target import TargetClientFactory


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
        ["target", "t", "127.0.0.1:1234",
         "The target: host:port, [v6addr]:port, or a Twisted client endpoint "
         "string (tcp:host=10.0.0.5:port=502, unix:path=/run/dev.sock)."],
        ["timeout", None, 60.0,
         "Connect timeout, and the longest a client waits for the answer "
         "to a request once it is the client's next to go (waiting for its "
         "turn, for a connection and for the target all count); then it "
         "gets an error and the target connection is renewed.",
         parseDuration],
        ["delay", None, 0.0,
         "Wait this long after every (re)connect to the target before "
         "sending the first request.", parseDuration],
        ["retry-delay", None, 1.0,
         "First delay before reconnecting to the target; it grows about "
         "2.7x per failed attempt up to --max-retry-delay.", parseDuration],
        ["max-retry-delay", None, 30.0,
         "Longest delay between reconnect attempts.", parseDuration],
        ["max-queue", None, 32,
         "Whole requests one client may have waiting; beyond it tcpmux "
         "stops reading that client until its queue drains.", parseCount],
        ["max-clients", None, 1024,
         "Clients connected at once; another is closed at once.", parseCount],
        ["client-timeout", None, 0.0,
         "Close a client that sent nothing and waited for nothing this long "
         "(0: never).", parseDuration],
        ["idle-close", None, 0.0,
         "Close the target connection once no client has been connected "
         "this long, and re-open it when one connects (0: keep it open; it "
         "is opened at start either way).", parseDuration],
    ]

    optFlags = [
        ["verbose", "v",
         "Log a hex dump of every message and the time of each round trip."],
    ]

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

        try:
            protocols.get(self["protocol"])
        except protocols.UnknownProtocol as e:
            raise usage.UsageError(str(e))
        try:
            listenEndpoint(reactor, self["listen"])
            targetEndpoint(reactor, self["target"], self["timeout"])
        except ValueError as e:
            raise usage.UsageError(str(e))
        if self["timeout"] <= 0:
            raise usage.UsageError("--timeout must be more than 0")


def makeService(options):
    """
    One L{MultiplexerService}: C{--listen} -> C{--target}.
    """
    from twisted.internet import reactor

    application = protocols.get(options["protocol"])
    target = TargetClientFactory(
        targetEndpoint(reactor, options["target"], options["timeout"]),
        application,
        name=options["target"],
        timeout=options["timeout"],
        delay=options["delay"],
        retryDelay=options["retry-delay"],
        maxRetryDelay=options["max-retry-delay"],
    )
    multiplexer = Multiplexer(
        application,
        target,
        maxQueue=options["max-queue"],
        maxClients=options["max-clients"],
        verbose=options["verbose"],
        timeout=options["timeout"],
        clientTimeout=options["client-timeout"] or None,
        idleClose=options["idle-close"] or None,
    )
    return MultiplexerService(
        listenDescription(options["listen"]), multiplexer, exitCleanlyOnSIGTERM=True
    )
