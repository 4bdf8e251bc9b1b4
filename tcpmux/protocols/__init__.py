# -*- test-case-name: tests.test_config -*-
"""
The application protocols tcpmux can frame, by name.

Each lives in its own module and exposes an L{ApplicationProtocol} instance
named C{application}. Adding a protocol means adding a module and a line
here; the multiplexer core does not change.
"""

from importlib import import_module

# name -> module holding its ``application``; imported only when used, so
# listing protocols stays cheap.
_MODULES = {
    "echo": "tcpmux.protocols.echo",
    "http": "tcpmux.protocols.http",
    "iso8583": "tcpmux.protocols.iso8583",
    "modbus": "tcpmux.protocols.modbus",
    "modbus-rtu": "tcpmux.protocols.modbus_rtu",
    "modbus-serial": "tcpmux.protocols.modbus_serial",
    "mpu": "tcpmux.protocols.mpu",
}


class UnknownProtocol(KeyError):
    """
    No application protocol has this name.
    """

    def __str__(self):
        return "unknown protocol {!r}; known protocols: {}".format(
            self.args[0], ", ".join(names())
        )


def isModbus(application):
    """
    Whether C{application} frames Modbus (and so has units and PDUs): what
    the Modbus gateway's options need, asked without importing the gateway.
    """
    return getattr(application, "frames", None) is not None


def names():
    """
    The names of every known application protocol, sorted.
    """
    return sorted(_MODULES)


def get(name):
    """
    The L{ApplicationProtocol} called C{name}.

    @raise UnknownProtocol: if there is none.
    """
    try:
        moduleName = _MODULES[name]
    except KeyError:
        raise UnknownProtocol(name) from None
    return import_module(moduleName).application
