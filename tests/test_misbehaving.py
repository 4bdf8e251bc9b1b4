"""
Randomized misbehaving targets, end to end over real TCP on 127.0.0.1: a
Modbus target and an echo target that answer twice, answer late, push
answers nobody asked for, answer with ids never given out, close half way
through an answer or never answer; and real pymodbus clients, which all
use the same transaction ids, against a target that repeats some answers.

Whatever the target does, no client may ever receive an answer that is not
the answer to its own request. The choices are drawn from a seeded
L{random.Random}; the seed is in every assertion message, and
C{TCPMUX_TEST_SEED=<seed>} replays its choices (the interleaving of the
clients is the reactor's, so a replay is close but not exact).
"""

import os
import random
import struct
import threading

from pymodbus.client import ModbusTcpClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.faults import connect, splitHTTP, splitLines
from tests.modbus import exceptionResponse, readRequest, readResponse, splitModbus
from tests.support import startMultiplexer, until

GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_FAILED = 0x0B
GATEWAY_CODES = (GATEWAY_PATH_UNAVAILABLE, GATEWAY_TARGET_FAILED)


def chooseSeed():
    """
    The seed of this run: C{TCPMUX_TEST_SEED} if set, else a fresh one.
    """
    seed = os.environ.get("TCPMUX_TEST_SEED")
    if seed is not None:
        return int(seed)
    return random.SystemRandom().randrange(2**32)


def registerValue(address):
    """
    What the targets here hold in register C{address}: a bijection of the
    16-bit addresses (31 is odd), so a value names the one address it
    answers.
    """
    return (address * 31 + 7) & 0xFFFF


def parseRead(request):
    """
    C{(transaction id, unit id, address)} of a L{readRequest}.
    """
    tid, _, _, unit, function, address = struct.unpack(">HHHBBH", request[:10])
    return tid, unit, address


def answerTo(request, value=None, tid=None):
    """
    The answer to the read C{request}: the register's own value and the
    request's own id, unless told otherwise.
    """
    requestId, unit, address = parseRead(request)
    return readResponse(
        requestId if tid is None else tid,
        registerValue(address) if value is None else value,
        unit,
    )


def writeIfOpen(connection, data):
    if connection.transport.connected and not connection.transport.disconnecting:
        connection.transport.write(data)


def summary(problems, limit=8):
    shown = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problems:\n  {shown}{more}"


class ScriptedTarget(ServerFactory):
    """
    A target listening on 127.0.0.1 until the test ends, whose delayed
    writes are cancelled then too.
    """

    noisy = False

    def listen(self, testCase):
        self._delayed = []
        port = reactor.listenTCP(0, self, interface="127.0.0.1")
        testCase.addCleanup(port.stopListening)
        testCase.addCleanup(self._cancelDelayed)
        return port.getHost().port

    def writeLater(self, delay, connection, data):
        """
        Write C{data} on C{connection} in C{delay} seconds, if still open.
        """
        self._delayed = [call for call in self._delayed if call.active()]
        self._delayed.append(reactor.callLater(delay, writeIfOpen, connection, data))

    def _cancelDelayed(self):
        for call in self._delayed:
            if call.active():
                call.cancel()


# -- a randomized misbehaving Modbus target


class MisbehavingModbusProtocol(Protocol):
    """
    One connection to a L{MisbehavingModbusTarget}.

    @ivar seenIds: the transaction ids this connection's requests carried.
    """

    def connectionMade(self):
        self.buffer = b""
        self.seenIds = set()
        self.factory.accepted += 1

    def dataReceived(self, data):
        requests, self.buffer = splitModbus(self.buffer + data)
        for request in requests:
            if self.transport.disconnecting:
                return
            self.factory.respond(self, request)


class MisbehavingModbusTarget(ScriptedTarget):
    """
    For each read it receives, draws one behaviour from C{weights} and
    answers (or does not) accordingly. C{silent} is drawn at most
    C{maxSilences} times (each one costs the whole queue a C{--timeout}).

    @ivar counts: how many times each behaviour was drawn.
    """

    protocol = MisbehavingModbusProtocol

    weights = {
        "answer": 40,
        "twiceInOneWrite": 10,
        "againLater": 10,
        "strayBefore": 6,
        "strayAfter": 6,
        "wrongId": 8,
        "halfThenClose": 6,
        "close": 6,
        "silent": 3,
    }

    def __init__(self, rng, maxSilences=3):
        self.rng = rng
        self.maxSilences = maxSilences
        self.counts = dict.fromkeys(self.weights, 0)
        self.accepted = 0
        self.requests = 0

    def draw(self):
        behaviour = self.rng.choices(list(self.weights), list(self.weights.values()))[0]
        if behaviour == "silent" and self.counts["silent"] >= self.maxSilences:
            behaviour = "answer"
        self.counts[behaviour] += 1
        return behaviour

    def strayId(self, connection, tid, after):
        """
        The id of a well-formed response nobody asked for, sent with the
        answer to the request carrying C{tid}: one given out before on this
        connection, or one no request carried. Never C{tid} before the
        answer (that would be the target answering wrongly, which no proxy
        can tell), and never C{tid + 1} after it (see
        L{BytesAfterAnswerTests}).
        """
        old = sorted(connection.seenIds - {tid})
        if after:
            old.append(tid)
        kind = self.rng.choice(["old", "high", "random"] if old else ["high", "random"])
        if kind == "old":
            return self.rng.choice(old)
        if kind == "high":
            return self.rng.randrange(0xF000, 0x10000)
        while True:
            strayId = self.rng.randrange(0x10000)
            if strayId not in connection.seenIds and strayId not in (tid, tid + 1):
                return strayId

    def respond(self, connection, request):
        self.requests += 1
        tid, unit, address = parseRead(request)
        connection.seenIds.add(tid)
        answer = answerTo(request)
        behaviour = self.draw()
        write = connection.transport.write
        if behaviour == "answer":
            write(answer)
        elif behaviour == "twiceInOneWrite":
            write(answer + answer)
        elif behaviour == "againLater":
            write(answer)
            self.writeLater(self.rng.uniform(0.001, 0.005), connection, answer)
        elif behaviour in ("strayBefore", "strayAfter"):
            after = behaviour == "strayAfter"
            # The value of a register no client reads: wrong for anyone.
            stray = answerTo(
                request,
                value=registerValue(self.rng.randrange(0x8000, 0x10000)),
                tid=self.strayId(connection, tid, after),
            )
            write(answer + stray if after else stray + answer)
        elif behaviour == "wrongId":
            write(answerTo(request, tid=0xFFF0 + self.rng.randrange(16)))
        elif behaviour == "halfThenClose":
            write(answer[: self.rng.randrange(1, len(answer))])
            connection.transport.loseConnection()
        elif behaviour == "close":
            connection.transport.loseConnection()
        elif behaviour == "silent":
            pass


def checkModbusAnswers(client, requests, messages, seed):
    """
    Problems with what one client received: exactly one message per request,
    in order, each with the request's own transaction id and unit id, and
    either the request's own register value or gateway exception 0x0A/0x0B.

    @return: C{(problems, answered, gatewayErrors)}.
    """
    problems = []
    answered = gatewayErrors = 0
    if len(messages) != len(requests):
        problems.append(
            f"seed {seed}: client {client} sent {len(requests)} requests and "
            f"received {len(messages)} messages"
        )
    for index, (request, message) in enumerate(zip(requests, messages)):
        tid, unit, address = parseRead(request)
        if message == answerTo(request):
            answered += 1
        elif message in [exceptionResponse(tid, code, 3, unit) for code in GATEWAY_CODES]:
            gatewayErrors += 1
        else:
            problems.append(
                f"seed {seed}: client {client}, request {index} (tid {tid}, unit "
                f"{unit}, address {address}, expected value "
                f"{registerValue(address)}) got {message.hex(' ')}"
            )
    return problems, answered, gatewayErrors


class RandomizedModbusTargetTests(TestCase):
    timeout = 30

    clients = 40
    requestsPerClient = 20

    async def test_everyClientGetsOnlyItsOwnAnswers(self):
        """
        40 clients, all using transaction ids 1..20, send 20 reads each (in
        bursts of 1 to 3) through tcpmux to a target that answers each read
        correctly, twice in one write, again 1-5 ms later, with a stray
        well-formed response before or after, with an id never given out,
        with half a frame and a close, with a close, or not at all. Every
        read gets exactly one answer, in order, with the client's own id:
        its own register's value, or 0x0A/0x0B.
        """
        seed = chooseSeed()
        rng = random.Random(seed)
        target = MisbehavingModbusTarget(random.Random(rng.getrandbits(64)))
        port, multiplexer = await startMultiplexer(
            self, "modbus", target.listen(self), "--timeout", "300ms"
        )
        clients = [await connect(self, port) for _ in range(self.clients)]
        sent = [[] for _ in clients]

        async def run(index, client, clientRng):
            requests = [
                # Each (client, sequence) reads its own register; the ids
                # are the same for every client, as pymodbus clients' are.
                readRequest(sequence + 1, index * 64 + sequence, unit=1 + index % 3)
                for sequence in range(self.requestsPerClient)
            ]
            while requests:
                burst = clientRng.randint(1, 3)
                batch, requests = requests[:burst], requests[burst:]
                sent[index].extend(batch)
                client.send(b"".join(batch))
                try:
                    await client.receive(len(sent[index]), timeout=3)
                except Exception:
                    # No answer in time, or disconnected: checked below.
                    return

        await gatherResults(
            [
                Deferred.fromCoroutine(
                    run(index, client, random.Random(rng.getrandbits(64)))
                )
                for index, client in enumerate(clients)
            ]
        )
        # Let the repeats sent 1-5 ms later arrive (and be dropped).
        await deferLater(reactor, 0.05)

        problems = []
        answered = gatewayErrors = 0
        for index, client in enumerate(clients):
            found, ok, errors = checkModbusAnswers(
                index, sent[index], client.messages, seed
            )
            problems += found
            answered += ok
            gatewayErrors += errors
            if client.closed.called:
                problems.append(f"seed {seed}: client {index} was disconnected")
        if problems:
            self.fail(summary(problems))
        total = self.clients * self.requestsPerClient
        self.assertEqual(answered + gatewayErrors, total)
        # The run exercised every behaviour, and answered a third of the reads
        # at least.
        self.assertNotIn(0, target.counts.values(), f"seed {seed}: {target.counts}")
        self.assertGreater(
            answered, total // 3, f"seed {seed}: {answered} of {total} answered"
        )


# -- a randomized misbehaving echo target


class MisbehavingEchoProtocol(Protocol):
    """
    One connection to a L{MisbehavingEchoTarget}.

    @ivar unanswered: requests received and not answered (silence).
    """

    def connectionMade(self):
        self.buffer = b""
        self.unanswered = 0
        self.factory.connections.append(self)
        self.factory.accepted += 1

    # Whole requests at the start of a buffer, and what is left.
    split = staticmethod(splitLines)

    def dataReceived(self, data):
        requests, self.buffer = self.split(self.buffer + data)
        for request in requests:
            if self.transport.disconnecting:
                return
            self.factory.respond(self, request)

    def connectionLost(self, reason):
        self.factory.connections.remove(self)


class MisbehavingEchoTarget(ScriptedTarget):
    """
    An echo target that misbehaves only in ways a proxy can detect for a
    protocol whose answers name nothing: surplus bytes in the same write as
    the answer, bytes pushed while no request is pending (L{pushWhileIdle}),
    closing without answering, and silence (at most C{maxSilences} times).
    """

    protocol = MisbehavingEchoProtocol

    weights = {
        "answer": 50,
        "duplicateInOneWrite": 14,
        "junkAfterInOneWrite": 14,
        "close": 8,
        "silent": 2,
    }

    def __init__(self, rng, maxSilences=2):
        self.rng = rng
        self.maxSilences = maxSilences
        self.counts = dict.fromkeys(self.weights, 0)
        self.counts["pushedWhileIdle"] = 0
        self.connections = []
        self.accepted = 0
        self.junkCount = 0

    def junk(self):
        self.junkCount += 1
        return b"junk %d from the target\n" % self.junkCount

    def respond(self, connection, line, behaviour=None):
        if behaviour is None:
            behaviour = self.rng.choices(list(self.weights), list(self.weights.values()))[0]
        if behaviour == "silent" and self.counts["silent"] >= self.maxSilences:
            behaviour = "answer"
        self.counts[behaviour] += 1
        write = connection.transport.write
        if behaviour == "answer":
            write(line)
        elif behaviour == "duplicateInOneWrite":
            write(line + line)
        elif behaviour == "junkAfterInOneWrite":
            write(line + self.junk())
        elif behaviour == "close":
            connection.transport.loseConnection()
        elif behaviour == "silent":
            connection.unanswered += 1

    def pushWhileIdle(self):
        """
        Push a junk line on some of the connections with no request
        pending; the caller makes sure tcpmux has none to write either.

        @return: the connections pushed on.
        """
        pushed = []
        for connection in self.connections:
            if (
                connection.unanswered == 0
                and not connection.transport.disconnecting
                and self.rng.random() < 0.7
            ):
                connection.transport.write(self.junk())
                pushed.append(connection)
        self.counts["pushedWhileIdle"] += len(pushed)
        return pushed


class RandomizedTargetTest:
    """
    The driver shared by the echo and HTTP tests: 30 clients send unique
    requests, in rounds of 1 to 3 each, to a target (L{makeTarget}) that
    misbehaves only in ways a proxy can detect for a protocol whose answers
    name nothing; between rounds, while nothing is in flight, it pushes
    junk on some connections. Each client connection must receive exactly a
    prefix of the answers to what it sent, in order: all of them, unless
    tcpmux disconnected it after a failed round trip (then it may have got
    tcpmux's own error reply, last, and it reconnects for the next round).

    @cvar kind: the protocol.
    """

    timeout = 30

    clients = 30
    rounds = 10
    kind = None

    def makeTarget(self, rng):
        """
        The misbehaving target: C{counts}, C{respond} and C{pushWhileIdle}
        as L{MisbehavingEchoTarget}'s.
        """
        raise NotImplementedError()

    def request(self, name):
        """
        A request named C{name} (bytes), and what its answer says.
        """
        raise NotImplementedError()

    def says(self, answer):
        """
        What C{answer} says (to be compared with what L{request} said it
        would), or L{None} if it is tcpmux's own error reply.
        """
        return answer

    async def runRandomized(self):
        seed = chooseSeed()
        rng = random.Random(seed)
        target = self.makeTarget(random.Random(rng.getrandbits(64)))
        port, multiplexer = await startMultiplexer(
            self, self.kind, target.listen(self), "--timeout", "300ms"
        )
        # Every client connection ever made, with what each answer to what
        # was sent on it must say.
        connections = []
        current = [None] * self.clients

        async def newConnection(index):
            client = await connect(self, port, self.kind)
            connections.append((index, len(connections), client, []))
            current[index] = connections[-1]

        async def oneRound(index, roundNumber, clientRng):
            if current[index] is None or current[index][2].closed.called:
                await newConnection(index)
            _, serial, client, expected = current[index]
            burst = [
                self.request(b"client %d connection %d round %d request %d"
                             % (index, serial, roundNumber, n))
                for n in range(clientRng.randint(1, 3))
            ]
            expected.extend(says for _, says in burst)
            client.send(b"".join(request for request, _ in burst))
            try:
                await client.receive(len(expected), timeout=3)
            except DeferredTimeoutError:
                # Neither answered nor disconnected: a problem.
                stuck.append((index, serial))
                client.transport.abortConnection()
            except Exception:
                # Disconnected by tcpmux: a failed round trip.
                await client.closed

        notRenewed = 0
        stuck = []
        clientRngs = [random.Random(rng.getrandbits(64)) for _ in range(self.clients)]
        for roundNumber in range(self.rounds):
            await gatherResults(
                [
                    Deferred.fromCoroutine(
                        oneRound(index, roundNumber, clientRngs[index])
                    )
                    for index in range(self.clients)
                ]
            )
            # Every client has its answers or was disconnected: tcpmux has
            # nothing to write, so junk pushed now is unasked for, and
            # tcpmux must drop it and the connection it came on.
            await deferLater(reactor, 0.01)
            pushed = target.pushWhileIdle()
            try:
                await until(lambda: all(not c.transport.connected for c in pushed), 0.5)
            except AssertionError:
                notRenewed += 1

        await deferLater(reactor, 0.05)
        problems = []
        disconnected = answered = 0
        for index, serial, client, expected in connections:
            said = [self.says(answer) for answer in client.messages]
            if client.closed.called:
                disconnected += 1
                if said and said[-1] is None:
                    # tcpmux's own error reply, then the close.
                    said = said[:-1]
                good = said == expected[: len(said)]
            else:
                good = said == expected
            if not good:
                problems.append(
                    f"seed {seed}: client {index}, connection {serial}"
                    f"{' (disconnected)' if client.closed.called else ''} "
                    f"expected {expected!r}, received {client.messages!r}"
                )
            answered += len(said)
        for index, serial in stuck:
            problems.append(
                f"seed {seed}: client {index}, connection {serial} was neither "
                "answered nor disconnected within 3 s"
            )
        if notRenewed:
            problems.append(
                f"seed {seed}: {notRenewed} times a connection that pushed "
                "while idle was not renewed"
            )
        if problems:
            self.fail(summary(problems))
        self.assertNotIn(0, target.counts.values(), f"seed {seed}: {target.counts}")
        sent = sum(len(expected) for _, _, _, expected in connections)
        self.assertGreater(
            answered,
            sent // 3,
            f"seed {seed}: {answered} of {sent} requests answered, "
            f"{disconnected} disconnections",
        )


class RandomizedEchoTargetTests(RandomizedTargetTest, TestCase):
    kind = "echo"

    def makeTarget(self, rng):
        return MisbehavingEchoTarget(rng)

    def request(self, name):
        line = name + b"\n"
        return line, line

    async def test_noClientGetsALineItDidNotSend(self):
        """
        Echo clients and a target that answers, answers twice in one write,
        appends a junk line to its answer, closes, or stays silent: no
        client gets a line it did not send.
        """
        await self.runRandomized()


# -- a randomized misbehaving HTTP target


class MisbehavingHTTPProtocol(MisbehavingEchoProtocol):
    """
    One connection to a L{MisbehavingHTTPTarget}: it reads GETs.
    """

    split = staticmethod(splitHTTP)


def okResponse(body):
    """
    A keep-alive HTTP/1.1 200 with C{body}.
    """
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class MisbehavingHTTPTarget(MisbehavingEchoTarget):
    """
    An HTTP/1.1 target answering each GET with a 200 whose body is the
    request's target, misbehaving as L{MisbehavingEchoTarget} does (its
    junk: whole responses nobody asked for), and also answering in two
    writes, the head and then the body.
    """

    protocol = MisbehavingHTTPProtocol

    weights = dict(MisbehavingEchoTarget.weights, answerInTwoWrites=10)

    def junk(self):
        self.junkCount += 1
        return okResponse(b"junk %d from the target" % self.junkCount)

    def respond(self, connection, request):
        answer = okResponse(request.split(b" ", 2)[1])
        behaviour = self.rng.choices(list(self.weights), list(self.weights.values()))[0]
        if behaviour == "answerInTwoWrites":
            self.counts[behaviour] += 1
            head = answer.index(b"\r\n\r\n") + 4
            connection.transport.write(answer[:head])
            self.writeLater(0.001, connection, answer[head:])
            return
        # (The rest as the echo target, with the answer for the line.)
        MisbehavingEchoTarget.respond(self, connection, answer, behaviour)


class RandomizedHTTPTargetTests(RandomizedTargetTest, TestCase):
    kind = "http"

    def makeTarget(self, rng):
        return MisbehavingHTTPTarget(rng)

    def request(self, name):
        path = b"/" + name.replace(b" ", b"/")
        return b"GET %s HTTP/1.1\r\nHost: device\r\n\r\n" % path, path

    def says(self, answer):
        if not answer.startswith(b"HTTP/1.1 200 "):
            return None
        return answer[answer.index(b"\r\n\r\n") + 4 :]

    async def test_noClientGetsAnAnswerToAnother(self):
        """
        HTTP clients sending keep-alive GETs (the common case, passed on
        unparsed, and pipelined ones) and a target that answers, answers in
        two writes, answers twice in one write, appends a response nobody
        asked for, closes, or stays silent: no client gets an answer to
        another's request.
        """
        await self.runRandomized()


# -- real pymodbus clients, which all use transaction ids 1, 2, 3...


class RepeatingModbusProtocol(Protocol):
    def connectionMade(self):
        self.buffer = b""

    def dataReceived(self, data):
        requests, self.buffer = splitModbus(self.buffer + data)
        for request in requests:
            self.factory.respond(self, request)


class RepeatingModbusTarget(ScriptedTarget):
    """
    Answers every read with its register's value; about C{rate} of the
    answers are repeated, half in the same write, half 2-5 ms later.
    """

    protocol = RepeatingModbusProtocol

    def __init__(self, rng, rate=0.05):
        self.rng = rng
        self.rate = rate
        self.repeated = {"inOneWrite": 0, "later": 0}

    def respond(self, connection, request):
        answer = answerTo(request)
        if self.rng.random() >= self.rate:
            connection.transport.write(answer)
        elif self.rng.random() < 0.5:
            self.repeated["inOneWrite"] += 1
            connection.transport.write(answer + answer)
        else:
            self.repeated["later"] += 1
            connection.transport.write(answer)
            self.writeLater(self.rng.uniform(0.002, 0.005), connection, answer)


def pymodbusReads(port, index, reads, start):
    """
    One pymodbus client reads registers C{index * 1000 + k}, one at a time,
    once every client is connected (C{start}, a L{threading.Barrier}):
    C{(address, "value", value)}, C{(address, "exception", code)} or
    C{(address, "error", what)} for each. Stops after an error (the
    client's connection may be out of step after it).
    """
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        assert client.connect(), "cannot connect to tcpmux"
    finally:
        # Together, so that their ids go 1, 2, 3... in step.
        start.wait(timeout=5)
    results = []
    try:
        for k in range(reads):
            address = index * 1000 + k
            try:
                response = client.read_holding_registers(address, count=1, device_id=1)
            except Exception as e:
                results.append((address, "error", repr(e)))
                break
            if response.isError():
                code = getattr(response, "exception_code", None)
                results.append((address, "exception", code))
                if code not in GATEWAY_CODES:
                    break
            else:
                results.append((address, "value", list(response.registers)))
    finally:
        client.close()
    return results


class PymodbusClientsTests(TestCase):
    timeout = 30

    clients = 4
    reads = 150

    async def test_sharedIdsRepeatedAnswers(self):
        """
        Four pymodbus clients (ids 1, 2, 3... each) read their own registers
        150 times each through tcpmux from a target that repeats about 5% of
        its answers, in the same write or a few ms later: every read returns
        the client's own register's value, or rarely 0x0A/0x0B.
        """
        seed = chooseSeed()
        target = RepeatingModbusTarget(random.Random(seed))
        port, multiplexer = await startMultiplexer(
            self, "modbus", target.listen(self), "--timeout", "2"
        )
        start = threading.Barrier(self.clients)
        results = await gatherResults(
            [
                deferToThread(pymodbusReads, port, index, self.reads, start)
                for index in range(self.clients)
            ]
        )
        problems = []
        gatewayErrors = 0
        for index, reads in enumerate(results):
            if len(reads) != self.reads:
                problems.append(
                    f"seed {seed}: client {index} stopped after {len(reads)} reads"
                )
            for address, kind, value in reads:
                if kind == "value" and value == [registerValue(address)]:
                    continue
                if kind == "exception" and value in GATEWAY_CODES:
                    gatewayErrors += 1
                    continue
                owner = ""
                if kind == "value" and len(value) == 1:
                    # Whose register was it? (registerValue is a bijection.)
                    inverse = (value[0] - 7) * pow(31, -1, 0x10000) & 0xFFFF
                    owner = f" (register {inverse}'s value)"
                problems.append(
                    f"seed {seed}: client {index} read register {address}: "
                    f"{kind} {value}{owner}, expected {[registerValue(address)]}"
                )
        if problems:
            self.fail(summary(problems))
        self.assertGreater(sum(target.repeated.values()), 0, f"seed {seed}")
        self.assertLess(
            gatewayErrors,
            self.clients * self.reads * 0.05,
            f"seed {seed}: {gatewayErrors} gateway errors; repeats {target.repeated}",
        )


# -- bytes after an answer, in the same read, naming the next request's id


class BytesAfterAnswerTests(TestCase):
    timeout = 30

    async def test_modbusNextIdInSameReadNeverDelivered(self):
        """
        The target answers a read and, in the same write, sends a response
        carrying the id that tcpmux gives the next request on the
        connection: those bytes came before that request was even written,
        so they answer nothing and must reach no one ("bytes that follow a
        complete response in the same read are never delivered"). The next
        client gets its own register's value, or 0x0B.

        (B's own id is A's plus one, so that where ids are not rewritten
        the stray id is B's id too.)
        """
        held = []

        class Holding(Protocol):
            def connectionMade(self):
                self.buffer = b""

            def dataReceived(self, data):
                requests, self.buffer = splitModbus(self.buffer + data)
                for request in requests:
                    if not held:
                        held.append((self, request))
                    else:
                        self.transport.write(answerTo(request))

        factory = ServerFactory.forProtocol(Holding)
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        port, multiplexer = await startMultiplexer(
            self, "modbus", listening.getHost().port, "--timeout", "2"
        )
        a = await connect(self, port)
        b = await connect(self, port)
        a.send(readRequest(1, 100))
        await until(lambda: held)
        bAnswer = b.receive(1)
        b.send(readRequest(2, 200))
        # B's request waits for its turn in tcpmux.
        await until(lambda: len(multiplexer.queue.lock.waiting) == 1)
        connection, request = held[0]
        wireId = parseRead(request)[0]
        connection.transport.write(
            answerTo(request)
            + answerTo(request, value=0xBAD, tid=(wireId + 1) & 0xFFFF)
        )
        self.assertEqual(await a.receive(1), [readResponse(1, registerValue(100))])
        self.assertIn(
            (await bAnswer)[0],
            [
                readResponse(2, registerValue(200)),
                exceptionResponse(2, GATEWAY_TARGET_FAILED),
            ],
        )
