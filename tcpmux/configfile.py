# -*- test-case-name: tests.test_configfile -*-
"""
C{twistd tcpmux --config FILE}: many listener -> target pairs ("muxes")
in one process, from a TOML file.

The file has an array of tables C{[[mux]]}, one per pair, whose keys are
C{twistd tcpmux}'s long option names, and an optional top-level C{metrics}
(the metrics endpoint)::

    metrics = "tcp:9102:interface=127.0.0.1"

    [[mux]]
    name = "inverter"
    protocol = "modbus"
    listen = "tcp:5020"
    target = "192.0.2.10:502"
    timeout = "10s"

Each table becomes the argument list C{--key=value ...} and is parsed by
the very L{tcpmux.tap.Options} that parses the command line, so the keys,
their checks and their defaults are the options' own, including options
added later. A value is a string or a number; a flag is C{true} or
C{false}; a repeatable option (C{route}) takes a list. A mistake is one
line naming the file, the table and the key.
"""

import getopt
import re

from twisted.python import usage

from tcpmux.config import _fields, listenDescription, listenEndpoint


def _tomllib():
    """
    The TOML parser, imported when a file is read: a run without --config
    does not carry it (issue 15).
    """
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    return tomllib


# Options that make no sense in a table: they print and exit, or are the
# file itself, or are the file's top-level keys.
NOT_IN_TABLES = ("help", "version", "list-protocols", "config", "metrics")

TOP_LEVEL = ("mux", "metrics")


class ConfigError(usage.UsageError):
    """
    A mistake in the config file, or options given next to C{--config}:
    one line that says where and what.
    """


class Config:
    """
    A config file, read and checked.

    @ivar path: the file's name, as given.
    @ivar muxes: one parsed L{tcpmux.tap.Options} per C{[[mux]]} table, in
        the file's order.
    @ivar metrics: the top-level C{metrics} endpoint description, or
        L{None}.
    """

    def __init__(self, path, muxes, metrics=None):
        self.path = path
        self.muxes = muxes
        self.metrics = metrics


def checkAlone(options, args):
    """
    Raise L{ConfigError} if C{args} (the command line of C{options}, a
    L{tcpmux.tap.Options}) has C{--config} and any other option: the file
    is the one source of truth. (Parsed as L{usage.Options} parses, so an
    abbreviation such as C{--conf} counts too.)
    """
    try:
        given, rest = getopt.gnu_getopt(args, options.shortOpt, options.longOpt)
    except getopt.GetoptError:
        return  # usage.Options reports it
    names = [options.synonyms.get(name.lstrip("-"), name.lstrip("-")) for name, _ in given]
    if "config" not in names or {"help", "version"} & set(names):
        return
    others = [
        name for name, _ in given
        if options.synonyms.get(name.lstrip("-"), name.lstrip("-")) != "config"
    ]
    if others or rest:
        extra = others[0] if others else rest[0]
        if options.synonyms.get(extra.lstrip("-")) == "metrics":
            where = "the file's top-level metrics key"
        else:
            where = "the file's [[mux]] tables"
        raise ConfigError(
            f"--config takes every option from its file: {extra} given next to it "
            f"(put it in {where})"
        )


def _keys(options):
    """
    The keys a table may have, from the options themselves: name -> whether
    the option takes a value (else it is a flag).
    """
    keys = {}
    for spec in options.longOpt:
        name = spec.rstrip("=")
        if name not in NOT_IN_TABLES:
            keys[name] = spec.endswith("=")
    return keys


def _repeatable(optionsFactory, name):
    """
    Whether option C{name} may be given more than once, each time adding
    to a list (C{--route}): found by giving it twice to fresh options.
    """
    options = optionsFactory()
    handler = options._dispatch.get(name)
    if handler is None or isinstance(handler, usage.CoerceParameter):
        return False
    try:
        handler(name, "1")
        handler(name, "2")
    except (Exception, SystemExit):
        return False
    value = options.opts.get(name)
    return isinstance(value, list) and len(value) == 2


def _scalar(value):
    """
    A table's value as a command-line argument, or L{None} if it has no
    such form (a boolean, a table, a date).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    return None


def _typeName(value):
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


_OPTION = re.compile(r"(?<![\w-])--([A-Za-z][\w-]*)")

# Messages of the options that name no option, and the key they are about.
_SUBJECTS = (
    ("bad listen address", "listen"),
    ("cannot listen", "listen"),
    ("bad target", "target"),
    ("unknown protocol", "protocol"),
)


class _Table:
    """
    One C{[[mux]]} table being read: where it is, for messages.
    """

    def __init__(self, path, index, table):
        self.path = path
        self.index = index
        self.table = table
        self.indexLabel = f"[[mux]] #{index + 1}"
        name = table.get("name")
        if isinstance(name, str) and name:
            self.label = f'[[mux]] "{name}"'
        else:
            self.label = self.indexLabel

    def error(self, key, message, label=None):
        return ConfigError(f"{self.path}: {label or self.label}: {key}: {message}")


def _arguments(table, keys, optionsFactory):
    """
    C{table} as a command line: C{--key=value} for each value, each item of
    a repeatable option's list, and C{--flag} for each true flag.
    """
    args = []
    for key, value in table.table.items():
        if key not in keys:
            if key == "metrics":
                raise table.error(
                    key, "metrics is a top-level key (above the first [[mux]])"
                )
            known = sorted(keys)
            import difflib

            close = difflib.get_close_matches(key, known, 1)
            hint = f"did you mean {close[0]}?" if close else "keys are the long option names"
            raise table.error(key, f"unknown key ({hint} See twistd tcpmux --help)")
        if not keys[key]:
            if not isinstance(value, bool):
                raise table.error(key, f"is a flag: true or false, not {value!r}")
            if value:
                args.append(f"--{key}")
            continue
        if isinstance(value, list):
            if not _repeatable(optionsFactory, key):
                raise table.error(key, "takes one value, not a list")
            values = value
        else:
            values = [value]
        for item in values:
            text = _scalar(item)
            if text is None:
                raise table.error(
                    key, f"must be a string or a number, not {_typeName(item)}"
                )
            args.append(f"--{key}={text}")
    return args


def _culprit(table, keys, message, synonyms):
    """
    The key of C{table} that the options' error C{message} is about.
    """
    named = [synonyms.get(name, name) for name in _OPTION.findall(message)]
    for name in named:
        if name in table.table:
            return name
    for name in named:
        if name in keys:
            return name
    lowered = message.lower()
    for start, key in _SUBJECTS:
        if start in lowered:
            return key
    return "(table)"


def _parseTable(table, keys, optionsFactory):
    """
    The parsed options of one table.

    @raise ConfigError: naming the key at fault.
    """
    args = _arguments(table, keys, optionsFactory)
    options = optionsFactory()
    try:
        options.parseOptions(args)
    except usage.UsageError as e:
        message = str(e)
        key = _culprit(table, keys, message, options.synonyms)
        raise table.error(key, message) from None
    except SystemExit as e:  # an option that prints and exits
        raise table.error("(table)", f"an option tried to exit ({e})") from None
    return options


_WILDCARDS = ("", "0.0.0.0", "::", "*")


def _binding(description):
    """
    What a listen C{description} binds, to compare with another's: C{(kind,
    port, interface)} for TCP, C{("unix", path)}, else the description.
    """
    kind, args, kwargs = _fields(listenDescription(description))
    if kind in ("tcp", "tcp6", "ssl"):
        port = kwargs.get("port", args[0] if args else None)
        interface = kwargs.get("interface")
        if interface is None and kind == "tcp" and len(args) > 1:
            interface = args[1]
        try:
            port = int(port)
        except (TypeError, ValueError):
            return ("other", description)
        return ("tcp", port, (interface or "").strip("[]"))
    if kind == "unix":
        path = kwargs.get("address", args[0] if args else "")
        return ("unix", path)
    return ("other", description.strip())


def _clash(a, b):
    """
    Whether listen addresses C{a} and C{b} (L{_binding}s) cannot both be
    bound.
    """
    if a[0] != b[0]:
        return False
    if a[0] != "tcp":
        return a == b
    if a[1] != b[1] or a[1] == 0:
        return False
    return a[2] == b[2] or a[2] in _WILDCARDS or b[2] in _WILDCARDS


def _clashMessage(listen, other, otherListen):
    if listen == otherListen:
        return f"{listen} is already the listen address of {other.label}"
    return f"{listen} overlaps the listen address of {other.label}, {otherListen}"


def _checkMetrics(path, value):
    """
    The top-level C{metrics} value: a server endpoint description.
    """
    from twisted.internet import reactor

    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{path}: metrics: must be a listen address such as "
            f'"tcp:9102:interface=127.0.0.1", not {value!r}'
        )
    from tcpmux.metrics import MetricsUnavailable, checkAvailable

    try:
        checkAvailable()
        listenEndpoint(reactor, value)
    except (MetricsUnavailable, ValueError) as e:
        raise ConfigError(f"{path}: metrics: {e}") from None
    return value.strip()


def load(path, optionsFactory):
    """
    Read and check the config file C{path}.

    @param optionsFactory: makes the options each table is parsed with
        (L{tcpmux.tap.Options}).
    @return: a L{Config}.
    @raise ConfigError: for the first mistake, as one line.
    """
    tomllib = _tomllib()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        reason = e.strerror.lower() if e.strerror else str(e)
        raise ConfigError(f"{path}: cannot read it: {reason}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 ({e})") from None

    for key in data:
        if key not in TOP_LEVEL:
            if isinstance(data[key], dict):
                what = f"unknown table [{key}]"
            else:
                what = "unknown top-level key"
            raise ConfigError(
                f"{path}: {key}: {what} (the file has [[mux]] tables and metrics)"
            )
    tables = data.get("mux")
    if tables is None or tables == []:
        raise ConfigError(f"{path}: no [[mux]] table: nothing to run")
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: mux: must be an array of tables: write [[mux]]")

    keys = _keys(optionsFactory())
    muxes = []
    seenListen = []
    seenNames = {}
    for index, table in enumerate(tables):
        table = _Table(path, index, table)
        options = _parseTable(table, keys, optionsFactory)
        listen = listenDescription(options["listen"])
        binding = _binding(listen)
        for other, otherListen, otherBinding in seenListen:
            if _clash(binding, otherBinding):
                raise table.error("listen", _clashMessage(listen, other, otherListen))
        seenListen.append((table, listen, binding))
        name = options["name"] or listen
        if name in seenNames:
            # (By index: the name is the same.)
            raise table.error(
                "name" if options["name"] else "listen",
                f"{name!r} is already the name of {seenNames[name].indexLabel}: "
                f"each mux needs its own",
                label=table.indexLabel,
            )
        seenNames[name] = table
        muxes.append(options)

    metrics = data.get("metrics")
    if metrics is not None:
        metrics = _checkMetrics(path, metrics)
        binding = _binding(metrics)
        for other, otherListen, otherBinding in seenListen:
            if _clash(binding, otherBinding):
                message = _clashMessage(metrics, other, otherListen)
                raise ConfigError(f"{path}: metrics: {message}")
    return Config(path, muxes, metrics)


def main(argv=None):
    """
    C{python -m tcpmux.configfile FILE}: check a config file without
    running it (before a restart); print one line per mux, or the mistake,
    and exit 0 or 1.
    """
    import sys

    from tcpmux.tap import Options

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tcpmux.configfile FILE", file=sys.stderr)
        return 2
    try:
        config = load(args[0], Options)
    except usage.UsageError as e:
        print(e, file=sys.stderr)
        return 1
    for mux in config.muxes:
        listen = listenDescription(mux["listen"])
        print(
            f"{mux['name'] or listen}: {mux['protocol']}, listening on {listen}, "
            f"target {mux['target']}"
        )
    if config.metrics is not None:
        print(f"metrics: {config.metrics}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
