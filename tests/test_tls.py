"""
TLS for clients: an C{ssl:} listen endpoint, and C{--tls-client-ca}
requiring client certificates signed by a CA, tested with real TLS clients
(Python's C{ssl} module and C{openssl s_client}) and certificates made by
the test.
"""

import datetime
import ipaddress
import os
import shutil
import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux.tap import Options, makeService
from tests.faults import FaultTarget, answer
from tcpmux.config import LISTEN_BACKLOG
from tests.support import freePort, handshakes, somaxconn, spawnChild

OPENSSL = shutil.which("openssl")


def _name(common):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject, key, issuer, issuerKey, ca=False, server=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuerKey.public_key()),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
                 if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuerKey, hashes.SHA256())


class Certificates:
    """
    PEM files in C{directory}: a CA (C{ca.pem}), a server certificate it
    signed (C{server.pem}, C{server.key}; for localhost and 127.0.0.1), a
    client certificate it signed (C{client.pem}, C{client.key}), and a
    client certificate signed by another CA (C{rogue.pem}, C{rogue.key}).
    """

    def __init__(self, directory):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        caKey = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("tcpmux test CA", caKey, "tcpmux test CA", caKey, ca=True)
        self._write("ca.pem", ca)
        for name, subject, server in (("server", "localhost", True), ("client", "client 1", False)):
            key = ec.generate_private_key(ec.SECP256R1())
            self._write(f"{name}.key", key)
            self._write(
                f"{name}.pem",
                _certificate(subject, key, "tcpmux test CA", caKey, server=server),
            )
        otherKey = ec.generate_private_key(ec.SECP256R1())
        rogueKey = ec.generate_private_key(ec.SECP256R1())
        self._write("rogue.key", rogueKey)
        self._write(
            "rogue.pem", _certificate("intruder", rogueKey, "another CA", otherKey)
        )

    def _write(self, name, item):
        if isinstance(item, x509.Certificate):
            data = item.public_bytes(serialization.Encoding.PEM)
        else:
            data = item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        with open(self.path(name), "wb") as f:
            f.write(data)

    def path(self, name):
        return os.path.join(self.directory, name)


def tlsExchange(port, certificates, clientCertificate=None, message=b"hello\n"):
    """
    A Python C{ssl} client: connect to 127.0.0.1:C{port}, verifying the
    server against the test CA, present C{clientCertificate} (C{"client"}
    or C{"rogue"}) if given, send C{message} and read one line.

    @return: the line, or the exception that ended the exchange.
    """
    context = ssl.create_default_context(cafile=certificates.path("ca.pem"))
    if clientCertificate is not None:
        context.load_cert_chain(
            certificates.path(f"{clientCertificate}.pem"),
            certificates.path(f"{clientCertificate}.key"),
        )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(message)
                received = b""
                while not received.endswith(b"\n"):
                    chunk = sock.recv(100)
                    if not chunk:
                        break
                    received += chunk
                return received
    except (ssl.SSLError, OSError) as e:
        return e


class TLSTestMixin:
    timeout = 60
    targetPort = 7

    def setUp(self):
        self.certificates = Certificates(os.path.abspath(self.mktemp()))

    def listenDescription(self, port):
        return (
            f"ssl:{port}:interface=127.0.0.1"
            f":privateKey={self.certificates.path('server.key')}"
            f":certKey={self.certificates.path('server.pem')}"
        )

    def startService(self, *extraArgs):
        """
        Run, until the test ends, the service twistd would, listening with
        TLS on a free port of 127.0.0.1; the port.
        """
        port = freePort()
        options = Options()
        options.parseOptions(
            [
                "-t", f"127.0.0.1:{self.targetPort}",
                "-l", self.listenDescription(port),
                *extraArgs,
            ]
        )
        service = makeService(options)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return port


class TLSTests(TLSTestMixin, TestCase):
    def setUp(self):
        TLSTestMixin.setUp(self)
        self.target = FaultTarget("echo", answer)
        self.targetPort = self.target.listen(self)

    async def test_sslListen(self):
        """
        An ssl: listen endpoint serves TLS clients without certificates.
        """
        port = self.startService()
        line = await deferToThread(tlsExchange, port, self.certificates)
        self.assertEqual(line, b"hello\n")

    async def test_clientCertificateRequired(self):
        """
        With --tls-client-ca, a client presenting a certificate signed by
        that CA is served; one without a certificate, or with one signed
        by another CA, is not, and nothing it sent reaches the target.
        """
        port = self.startService("--tls-client-ca", self.certificates.path("ca.pem"))
        line = await deferToThread(tlsExchange, port, self.certificates, "client")
        self.assertEqual(line, b"hello\n")
        for certificate in (None, "rogue"):
            result = await deferToThread(
                tlsExchange, port, self.certificates, certificate, b"secret\n"
            )
            # The handshake fails (TLS 1.3: at the client's first read).
            if not isinstance(result, (ssl.SSLError, ConnectionError)):
                self.assertIn(result, (b"",), certificate)
        await deferLater(reactor, 0.2)
        self.assertEqual(self.target.requests, [b"hello\n"])

    async def openssl(self, port, *certificate):
        """
        Run C{openssl s_client} against C{port}, with C{certificate}
        arguments, sending a line: the lines it printed, and whether the
        line came back.
        """
        child = spawnChild(
            self, OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}",
            "-CAfile", self.certificates.path("ca.pem"), "-verify_return_error",
            "-quiet", *certificate,
        )
        child.transport.write(b"hello over openssl\n")
        # Whichever comes first: the line back, or s_client's end.
        first = Deferred()

        def settle(what):
            if not first.called:
                first.callback(what)

        echoed = child.waitFor("hello over openssl", timeout=30)
        echoed.addCallbacks(lambda line: settle("echoed"), lambda failure: settle("timeout"))
        child.ended.addCallback(lambda status: settle("ended") or status)
        what = await first
        child.signal("KILL")
        await child.ended
        if not echoed.called:
            echoed.cancel()
        return what == "echoed", child.lines

    async def test_openssl(self):
        """
        C{openssl s_client}: with the client certificate it gets its line
        back; without one, the server refuses it.
        """
        self.assertIsNotNone(OPENSSL, "openssl is not installed (.ci/run installs it)")
        port = self.startService("--tls-client-ca", self.certificates.path("ca.pem"))
        echoed, lines = await self.openssl(
            port,
            "-cert", self.certificates.path("client.pem"),
            "-key", self.certificates.path("client.key"),
        )
        self.assertTrue(echoed, lines)
        echoed, lines = await self.openssl(port)
        self.assertFalse(echoed, lines)
        self.assertEqual(self.target.requests, [b"hello over openssl\n"])


class ClientCertificateBacklogTests(TLSTestMixin, TestCase):
    """
    The C{ssl:} listener that requires client certificates is built by
    tcpmux, not by Twisted's parser: its listen backlog is still
    L{LISTEN_BACKLOG} unless the address names one. (The TCP handshake
    completes in the kernel, before any TLS, so it is counted the same way
    as a plain listener's.)
    """

    def setUp(self):
        TLSTestMixin.setUp(self)
        self.target = FaultTarget("echo", answer)
        self.targetPort = self.target.listen(self)

    def test_defaultBacklog(self):
        """
        Without C{backlog=}, 200 clients that connect while tcpmux is busy
        all complete their handshakes (Twisted's default would take 51).
        """
        self.assertGreaterEqual(LISTEN_BACKLOG, 200)
        port = self.startService("--tls-client-ca", self.certificates.path("ca.pem"))
        clients, connected = handshakes(self, port, 200)
        self.assertEqual(connected, min(200, somaxconn() + 1))

    def test_backlogGiven(self):
        """
        C{backlog=} in the address is the backlog, by keyword or in its
        place among the C{ssl:} fields.
        """
        key = self.certificates.path("server.key")
        certificate = self.certificates.path("server.pem")
        for description in (
            "ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={certificate}"
            ":backlog=5",
            # port, privateKey, certKey, sslmethod, interface, backlog
            "ssl:{port}:{key}:{certificate}:TLS_METHOD:127.0.0.1:5",
        ):
            self.listenDescription = lambda port, description=description: (
                description.format(port=port, key=key, certificate=certificate)
            )
            port = self.startService("--tls-client-ca", self.certificates.path("ca.pem"))
            clients, connected = handshakes(self, port, 20)
            self.assertEqual(connected, 6, description)


class OptionTests(TLSTestMixin, SynchronousTestCase):
    """
    --tls-client-ca mistakes are usage errors.
    """

    def assertUsage(self, message, *args):
        with self.assertRaises(usage.UsageError) as caught:
            Options().parseOptions(["-t", f"127.0.0.1:{self.targetPort}", *args])
        self.assertIn(message, str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    def test_needsSSLListen(self):
        self.assertUsage(
            "--tls-client-ca needs an ssl: listen address",
            "-l", "tcp:5020", "--tls-client-ca", self.certificates.path("ca.pem"),
        )

    def test_badCAFile(self):
        self.assertUsage(
            "--tls-client-ca: cannot read CA certificate file",
            "-l", self.listenDescription(5020),
            "--tls-client-ca", self.certificates.path("none.pem"),
        )
        self.assertUsage(
            "holds no certificate in PEM format",
            "-l", self.listenDescription(5020),
            "--tls-client-ca", self.certificates.path("client.key"),
        )

    def test_badServerKey(self):
        self.assertUsage(
            "cannot read private key file",
            "-l", f"ssl:5020:privateKey={self.certificates.path('none.key')}"
            f":certKey={self.certificates.path('server.pem')}",
            "--tls-client-ca", self.certificates.path("ca.pem"),
        )
