"""
Tests for L{tcpmux.interfaces}: the objects plugged together at each seam
provide the interface of that seam, as L{zope.interface.verify.verifyObject}
checks it (every method and attribute there, with compatible signatures).

One class per group of objects.
"""

from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from tcpmux import protocols
from tcpmux.client.dispatch import Routes
from tcpmux.client.queue import RoundTripQueue
from tcpmux.client.session import ClientSession
from tcpmux.interfaces import (
    IApplicationProtocol,
    IDispatcher,
    IFramer,
    IMessageReceiver,
    IPipelining,
    IResponseFramer,
    IResponseReceiver,
    ITarget,
)
from tcpmux.protocols.echo import application as echo
from tcpmux.protocols.modbus import application as modbus
from tcpmux.target.factory import TargetClientFactory
from tcpmux.target.pipeline import PipelinedTargetSession
from tcpmux.target.pool import TargetPool
from tcpmux.target.session import TargetSession
from tests.framers import Recording
from tests.memory import MemoryTarget, connectClient, memoryMultiplexer
from tests.support import buildMultiplexer


class VerifyMixin:
    def assertProvides(self, interface, candidate, what):
        """
        C{candidate} provides C{interface} in full; a failure names C{what}
        was checked.
        """
        try:
            verifyObject(interface, candidate)
        except Invalid as e:
            self.fail(f"{what} does not provide {interface.__name__}: {e}")


class RecordingReceiverTests(VerifyMixin, SynchronousTestCase):
    """
    The recording receiver the framer tests use is a whole
    L{IResponseReceiver}, so that what they check holds for tcpmux's own
    receivers.
    """

    def test_recording(self):
        self.assertProvides(IResponseReceiver, Recording(), "tests.framers.Recording")


class ApplicationProtocolTests(VerifyMixin, SynchronousTestCase):
    """
    Every application protocol in L{tcpmux.protocols.names}, and the framers
    and pipelining it supplies.
    """

    def applications(self):
        return [(name, protocols.get(name)) for name in protocols.names()]

    def test_application(self):
        for name, application in self.applications():
            self.assertProvides(IApplicationProtocol, application, name)

    def assertBuildsFramer(self, interface, build, what):
        """
        C{build(receiver)} gives an C{interface} that delivers to that
        receiver, and introduces itself to it once connected.
        """
        recorder = Recording()
        framer = build(recorder)
        self.assertProvides(interface, framer, what)
        self.assertIs(framer.receiver, recorder, what)
        framer.makeConnection(StringTransport())
        self.assertIs(recorder.framer, framer, what)

    def test_requestFramer(self):
        """
        C{buildRequestFramer} gives an L{IFramer} that delivers to the
        receiver it was given, and introduces itself to it once connected.
        """
        for name, application in self.applications():
            self.assertBuildsFramer(
                IFramer, application.buildRequestFramer, f"{name} request framer"
            )

    def test_responseFramer(self):
        """
        C{buildResponseFramer} gives an L{IResponseFramer} that delivers to
        the receiver it was given, and introduces itself to it once
        connected.
        """
        for name, application in self.applications():
            self.assertBuildsFramer(
                IResponseFramer, application.buildResponseFramer, f"{name} response framer"
            )

    def test_pipelining(self):
        """
        A protocol's pipelining, when it has one, is an L{IPipelining} whose
        response framer is an L{IResponseFramer}.
        """
        for name, application in self.applications():
            if application.pipelining is None:
                continue
            self.assertProvides(IPipelining, application.pipelining, f"{name} pipelining")
            recorder = Recording()
            framer = application.pipelining.buildResponseFramer(recorder)
            self.assertProvides(
                IResponseFramer, framer, f"{name} pipelining response framer"
            )
            self.assertIs(framer.receiver, recorder, name)

    def test_somePipelining(self):
        """
        At least one protocol offers pipelining, so L{test_pipelining}
        checks something.
        """
        self.assertIn(
            "modbus",
            [name for name, application in self.applications() if application.pipelining],
        )


class CoreTests(VerifyMixin, SynchronousTestCase):
    """
    The core's own objects at each seam: the client session, the target
    sessions, and the targets, as C{twistd tcpmux} builds them too.
    """

    def test_clientSession(self):
        """
        The receiver of a client's request framer, as the multiplexer builds
        it, is a L{ClientSession}: an L{IMessageReceiver}, and the producer
        for its client's transport.
        """
        multiplexer, _ = memoryMultiplexer(echo)
        framer, _ = connectClient(multiplexer)
        session = framer.receiver
        self.assertIsInstance(session, ClientSession)
        self.assertProvides(IMessageReceiver, session, "ClientSession")
        self.assertProvides(IPushProducer, session, "ClientSession")

    def test_targetSession(self):
        """
        The receiver of a target connection's response framer is a
        L{TargetSession}, an L{IResponseReceiver}.
        """
        target = MemoryTarget(echo)
        target.factory.start()
        _, session = target.accept()
        self.assertIsInstance(session, TargetSession)
        self.assertProvides(IResponseReceiver, session, "TargetSession")

    def test_pipelinedTargetSession(self):
        """
        With C{pipeline}, it is a L{PipelinedTargetSession}, an
        L{IResponseReceiver} too.
        """
        target = MemoryTarget(modbus, pipeline=4)
        target.factory.start()
        _, session = target.accept()
        self.assertIsInstance(session, PipelinedTargetSession)
        self.assertProvides(IResponseReceiver, session, "PipelinedTargetSession")

    def test_dispatchers(self):
        """
        Where the sessions send requests is an L{IDispatcher}: without
        routes, the default target's L{RoundTripQueue} itself; with
        C{--route}, L{Routes} in front of every target's queue.
        """
        plain = buildMultiplexer("--protocol", "modbus", "--target", "127.0.0.1:502")
        self.assertIsInstance(plain.dispatcher, RoundTripQueue)
        self.assertProvides(IDispatcher, plain.dispatcher, "RoundTripQueue")
        routed = buildMultiplexer(
            "--protocol", "modbus", "--target", "127.0.0.1:502",
            "--route", "2=127.0.0.1:503",
        )
        self.assertIsInstance(routed.dispatcher, Routes)
        self.assertProvides(IDispatcher, routed.dispatcher, "Routes")
        for queue in routed.queues:
            self.assertProvides(IDispatcher, queue, "RoundTripQueue")

    def test_targetClientFactory(self):
        """
        One target connection, L{TargetClientFactory}, is an L{ITarget}.
        """
        factory = MemoryTarget(echo).factory
        self.assertProvides(ITarget, factory, "TargetClientFactory")

    def test_targetPool(self):
        """
        A L{TargetPool} of target connections is an L{ITarget}.
        """
        first = MemoryTarget(echo)
        pool = TargetPool(
            [first.factory] + [MemoryTarget(echo, first.reactor).factory for _ in range(2)]
        )
        self.assertProvides(ITarget, pool, "TargetPool")

    def assertTargetBuilt(self, targetClass, concurrency, *args):
        """
        The multiplexer C{twistd tcpmux} builds from C{args} has an
        L{ITarget} of C{targetClass} carrying C{concurrency} round trips.
        """
        target = buildMultiplexer("--target", "127.0.0.1:502", *args).target
        self.assertIsInstance(target, targetClass)
        self.assertProvides(ITarget, target, " ".join(args))
        self.assertEqual(target.concurrency, concurrency)

    def test_builtTargets(self):
        """
        The target of the multiplexer C{twistd tcpmux} builds is an
        L{ITarget}: one connection, a pool of C{--connections}, or one
        pipelined connection.
        """
        self.assertTargetBuilt(TargetClientFactory, 1, "--protocol", "echo")
        self.assertTargetBuilt(TargetPool, 3, "--protocol", "echo", "--connections", "3")
        self.assertTargetBuilt(
            TargetClientFactory, 4, "--protocol", "modbus", "--pipeline", "4"
        )
