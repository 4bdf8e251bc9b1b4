# -*- test-case-name: tests -*-
"""
tcpmux: many clients share one connection to a target that accepts only one.

Clients connect to a listener; each client's bytes are cut into whole request
messages by an application-protocol framer (see L{tcpmux.protocols}); one
round trip at a time crosses the single connection to the target, and each
whole response goes back to the client that asked.
"""

__version__ = "0.1.0"


def versions():
    """
    tcpmux's version, with Twisted's and Python's, as one line.
    """
    import platform

    import twisted

    return (
        f"tcpmux {__version__} (Twisted {twisted.__version__}, "
        f"Python {platform.python_version()})"
    )
