"""Option values, checked once, where they are read.

A :class:`Schema` lists the options of one section (``[safedeploy]``, a
recipe's part) with their defaults and a parser each.  :meth:`Schema.parse`
refuses an unknown option name (with a "did you mean"), an empty value
where a value is needed, a number that is not finite or out of range, a
port outside 1-65535, a URL that does not parse, a command line whose
quotes do not balance -- each with one line naming the option and what to
write instead.  Nothing is staged, locked or written before that.
"""
import math
import os

from . import commands
from .errors import ConfigurationError

TRUE = ('true', 'yes', 'on', '1')
FALSE = ('false', 'no', 'off', '0')


class Option:

    def __init__(self, name, default, parse, doc=''):
        self.name = name
        self.default = default
        self.parse = parse
        self.doc = doc


class Schema:
    """The options of one kind of section.  ``where(name)`` makes the
    prefix of a message (``safedeploy:keep``, ``[snapshot] keep``)."""

    def __init__(self, options, allowed=()):
        self.options = {o.name: o for o in options}
        # options that belong to others (buildout's recipe, zc.recipe.egg's
        # eggs ...): accepted, not parsed
        self.allowed = set(allowed)

    def defaults(self):
        return {n: o.default for n, o in self.options.items()}

    def check_names(self, values, where):
        for name in values:
            if name in self.options or name in self.allowed or \
                    name.startswith('_'):
                continue
            import difflib  # only for the error: start-up stays light
            close = difflib.get_close_matches(
                name, list(self.options) + sorted(self.allowed), n=1,
                cutoff=0.6)
            raise ConfigurationError(
                'unknown option %s; %s' % (
                    where(name), 'did you mean %s?' % close[0] if close else
                    'the options are %s' % ', '.join(sorted(self.options))))

    def parse(self, values, where):
        """{name: parsed value} for every option of the schema."""
        self.check_names(values, where)
        result = {}
        for name, option in self.options.items():
            raw = values.get(name, option.default)
            result[name] = option.parse(raw, where(name))
        return result


def section_where(section):
    """``[snapshot] keep``-style names for a recipe's options."""
    return lambda name: '[%s] %s' % (section, name)


def dotted_where(section):
    """``safedeploy:keep``-style names."""
    return lambda name: '%s:%s' % (section, name)


# -- parsers: (raw text or None, where) -> value --------------------------

def text(raw, where):
    return (raw or '').strip()


def required(parse=text, example=''):
    def check(raw, where):
        value = parse(raw, where)
        if value in (None, '', []):
            raise ConfigurationError(
                '%s is empty; give a value%s' % (
                    where, ' (e.g. %s)' % example if example else ''))
        return value
    return check


def boolean(raw, where):
    v = (raw or '').strip().lower()
    if v in TRUE:
        return True
    if v in FALSE or v == '':
        return False
    raise ConfigurationError(
        'invalid value for %s: %r; use true or false' % (where, raw))


def _number(kind, minimum, maximum, raw, where, what):
    try:
        n = kind(str(raw).strip())
    except (TypeError, ValueError):
        n = None
    if n is not None and kind is float and not math.isfinite(n):
        n = None
    if n is None or (minimum is not None and n < minimum) or (
            maximum is not None and n > maximum):
        if maximum is None:
            rng = 'of at least %s' % minimum
        else:
            rng = 'from %s to %s' % (minimum, maximum)
        raise ConfigurationError(
            'invalid value for %s: %r; use %s %s' % (where, raw, what, rng))
    return n


def integer(minimum=0, maximum=None):
    return lambda raw, where: _number(int, minimum, maximum, raw, where,
                                      'a whole number')


def number(minimum=0, maximum=None):
    return lambda raw, where: _number(float, minimum, maximum, raw, where,
                                      'a number')


def port(raw, where):
    return _number(int, 1, 65535, raw, where, 'a port number')


def choice(*choices):
    def check(raw, where):
        value = (raw or '').strip()
        if value not in choices:
            raise ConfigurationError(
                'invalid value for %s: %r; use %s' % (
                    where, raw, ', '.join(choices[:-1]) + ' or ' +
                    choices[-1] if len(choices) > 1 else choices[0]))
        return value
    return check


def command(raw, where):
    """A command line: split now (a bad quote is an error now)."""
    return commands.split(raw, where)


def url(raw, where):
    value = (raw or '').strip()
    if not value:
        return ''
    import urllib.parse  # only url options need it: start-up stays light
    parsed = urllib.parse.urlsplit(value)
    try:
        parsed.port
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ('http', 'https') or \
            not parsed.hostname:
        raise ConfigurationError(
            'invalid URL in %s: %r; use http://host:port/path' % (
                where, value))
    return value


def words(raw, where):
    return (raw or '').split()


def address(raw, where):
    """A ZEO address: host:port, port, or a Unix socket path."""
    value = (raw or '').strip()
    if not value:
        return ''
    if value.startswith('/'):
        return value
    host, _, p = value.rpartition(':')
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    port(p, where)
    return '%s:%s' % (host or '127.0.0.1', int(p))


def path(base):
    """A path, relative ones taken from ``base``; '' stays ''."""
    def check(raw, where):
        value = (raw or '').strip()
        if not value:
            return ''
        if '\0' in value:
            raise ConfigurationError('invalid path in %s: %r' % (
                where, value))
        return os.path.normpath(os.path.join(base, value))
    return check
