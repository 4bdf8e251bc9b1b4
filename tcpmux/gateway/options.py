# -*- test-case-name: tests.test_gateway -*-
"""
What users write for the Modbus gateway (C{--unit-map}, C{--route},
C{--read-only}, C{--retries}), read without importing the gateway itself:
every run checks its options, and only a run that uses the gateway needs
L{tcpmux.gateway.modbus}.
"""

# Broadcast: on a serial line, devices act on a request to it and never
# answer.
BROADCAST = 0

READ_ONLY_MODES = ("off", "deny", "ignore")


def parseUnit(text):
    """
    A unit id, 0..255.

    @raise ValueError: for anything else.
    """
    text = str(text).strip()
    if not text.isdigit() or int(text) > 255:
        raise ValueError(f"a unit id is a number 0..255, not {text!r}")
    return int(text)


def parseUnitMap(text):
    """
    C{{client unit: device unit}} from C{"1=0"} or C{"1=0,2=5"}.

    @raise ValueError: saying what is wrong, in the user's terms.
    """
    mapping = {}
    for pair in str(text).split(","):
        client, equals, device = pair.partition("=")
        if not equals:
            raise ValueError(
                f"write CLIENT=DEVICE pairs separated by commas, such as "
                f"1=0 or 1=0,2=3, not {pair.strip()!r}"
            )
        client, device = parseUnit(client), parseUnit(device)
        if client in mapping:
            raise ValueError(f"unit {client} is mapped twice")
        mapping[client] = device
    return mapping


def parseRoute(text):
    """
    C{(unit, target)} from C{"2=10.0.0.7:502"}: the target is whatever
    follows the first C{=} (an endpoint string may contain more).

    @raise ValueError: saying what is wrong, in the user's terms.
    """
    unit, equals, target = str(text).partition("=")
    if not equals or not target.strip():
        raise ValueError(
            f"write UNIT=TARGET, such as 2=192.0.2.11:502, not {str(text)!r}"
        )
    return parseUnit(unit), target.strip()


def parseReadOnly(text):
    """
    C{(mode, units)} from C{"off"}, C{"deny"}, C{"ignore"}, or a mode for
    some unit ids only: C{"deny:1,2"}. C{units} is L{None} for every unit.

    @raise ValueError: saying what is wrong, in the user's terms.
    """
    mode, colon, units = str(text).strip().partition(":")
    mode = mode.strip().lower()
    if mode not in READ_ONLY_MODES:
        raise ValueError(
            f"use off, deny or ignore, or deny:UNIT,... for some units only, "
            f"not {str(text)!r}"
        )
    if not colon:
        return mode, None
    if mode == "off":
        raise ValueError("off takes no unit ids")
    return mode, frozenset(parseUnit(unit) for unit in units.split(","))


def parseRetries(text):
    """
    A whole number, 0 or more.
    """
    text = str(text).strip()
    if not text.isdigit():
        raise ValueError(f"use a whole number of 0 or more, not {text!r}")
    return int(text)
