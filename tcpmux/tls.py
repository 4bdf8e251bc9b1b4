# -*- test-case-name: tests.test_tls -*-
"""
TLS for clients: an C{ssl:} listen endpoint that requires client
certificates signed by a CA (C{--tls-client-ca}).
"""

import re

from twisted.python.filepath import FilePath

from tcpmux.config import LISTEN_BACKLOG

NEEDS_PYOPENSSL = (
    "TLS needs pyOpenSSL and service_identity: pip install 'tcpmux[tls]'"
)

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)

# The arguments of Twisted's ssl: server endpoint, in their positional order
# (twisted.internet.endpoints' ssl parser).
_SSL_ARGUMENTS = (
    "port",
    "privateKey",
    "certKey",
    "sslmethod",
    "interface",
    "backlog",
    "extraCertChain",
    "dhParameters",
)


def _unescape(value):
    return re.sub(r"\\(.)", r"\1", value)


def _read(path, what):
    try:
        return FilePath(path).getContent()
    except OSError as e:
        reason = e.strerror.lower() if e.strerror else e
        raise ValueError(f"cannot read {what} {path!r}: {reason}") from None


def loadCertificates(path):
    """
    Every certificate in the PEM file C{path}.

    @return: a list of L{twisted.internet.ssl.Certificate}.
    @raise ValueError: if the file cannot be read or holds no certificate.
    """
    from twisted.internet import ssl

    pems = _PEM_CERTIFICATE.findall(_read(path, "CA certificate file"))
    if not pems:
        raise ValueError(f"{path!r} holds no certificate in PEM format")
    try:
        return [ssl.Certificate.loadPEM(pem) for pem in pems]
    except Exception as e:
        raise ValueError(f"{path!r}: bad certificate ({e})") from None


def clientCertificateEndpoint(reactor, description, args, kwargs, clientCA):
    """
    The server endpoint of the C{ssl:} listen C{description} (split into
    its positional C{args} and keyword C{kwargs}, as Twisted's C{ssl:}
    parser takes them), requiring each client to present a certificate
    signed by a CA in the PEM file C{clientCA}: a client without one, or
    with another, fails the handshake before its first byte is read.

    @raise ValueError: saying what is wrong in the user's terms.
    """
    try:
        from OpenSSL import SSL
        from twisted.internet import ssl
        from twisted.internet.endpoints import SSL4ServerEndpoint
    except ImportError:
        raise ValueError(NEEDS_PYOPENSSL) from None
    if len(args) > len(_SSL_ARGUMENTS):
        raise ValueError(f"bad listen address {description!r}: too many fields")
    fields = dict(zip(_SSL_ARGUMENTS, (_unescape(arg) for arg in args)))
    for name, value in kwargs.items():
        if name not in _SSL_ARGUMENTS:
            raise ValueError(f"bad listen address {description!r}: unknown field {name}=")
        if name in fields:
            raise ValueError(f"bad listen address {description!r}: {name} given twice")
        fields[name] = _unescape(value)
    privateKey = fields.get("privateKey", "server.pem")
    certKey = fields.get("certKey", privateKey)
    certificatePEM = _read(certKey, "certificate file")
    keyPEM = _read(privateKey, "private key file")
    try:
        server = ssl.PrivateCertificate.loadPEM(certificatePEM + b"\n" + keyPEM)
    except Exception as e:
        raise ValueError(
            f"bad listen address {description!r}: cannot load the certificate "
            f"{certKey!r} and private key {privateKey!r} ({e})"
        ) from None
    chain = None
    if "extraCertChain" in fields:
        chain = [c.original for c in loadCertificates(fields["extraCertChain"])]
    options = {}
    if "sslmethod" in fields:
        try:
            options["method"] = getattr(SSL, fields["sslmethod"])
        except AttributeError:
            raise ValueError(
                f"bad listen address {description!r}: unknown sslmethod "
                f"{fields['sslmethod']!r}"
            ) from None
    if "dhParameters" in fields:
        options["dhParameters"] = ssl.DiffieHellmanParameters.fromFile(
            FilePath(fields["dhParameters"])
        )
    try:
        authorities = loadCertificates(clientCA)
    except ValueError as e:
        raise ValueError(f"--tls-client-ca: {e}") from None
    contextFactory = ssl.CertificateOptions(
        privateKey=server.privateKey.original,
        certificate=server.original,
        extraCertChain=chain,
        # A trust root turns on verification and requires a certificate.
        trustRoot=ssl.trustRootFromCertificates(authorities),
        **options,
    )
    try:
        backlog = int(fields.get("backlog", LISTEN_BACKLOG))
    except ValueError:
        raise ValueError(
            f"bad listen address {description!r}: backlog must be a number"
        ) from None
    return SSL4ServerEndpoint(
        reactor,
        int(fields["port"]),
        contextFactory,
        backlog=backlog,
        interface=fields.get("interface", ""),
    )
