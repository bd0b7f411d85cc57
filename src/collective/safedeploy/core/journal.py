"""An append-only journal of JSON lines.

The journal, not file times, is where order and state come from.  Each
entry is one line, appended with ``O_APPEND`` and fsynced before the step
it records is taken as done.

A writer killed half-way through a line leaves it without its newline.
The next append starts on a new line and says so (``"after_cut": true``),
so a reader knows the line before it was cut short by a crash and skips
it.  Any other line that is not one of our entries (not JSON, not an
object, an event or name of the wrong type) is *damaged*: a writer
refuses to go on from a damaged journal (:class:`~collective.safedeploy.
core.errors.Damaged`, naming the file and line), a listing shows the
entry as damaged and goes on.
"""
import json
import os

from .errors import Damaged


def now():
    import datetime   # only entries being written need it: start-up
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='microseconds')


def who():
    # imported here: only an entry being written needs them, and the
    # listings start faster without them
    import getpass
    import socket
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in a container
        user = str(os.getuid())
    return user, socket.gethostname()


class DamagedEntry(dict):
    """What a listing gets for a damaged line: ``line``, ``reason``."""


class Journal:

    def __init__(self, path):
        self.path = path

    def append(self, event, **fields):
        user, host = who()
        entry = dict(fields, event=event, time=now(), user=user, host=host,
                     pid=os.getpid())
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            cut = False
            if size:
                with open(self.path, 'rb') as f:
                    f.seek(size - 1)
                    cut = f.read(1) != b'\n'
            if cut:
                entry['after_cut'] = True
            line = json.dumps(entry, sort_keys=True).encode('utf-8') + b'\n'
            os.write(fd, (b'\n' if cut else b'') + line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def entries(self, strict=True):
        """The entries, oldest first.  ``strict``: a damaged line raises
        :class:`Damaged`; else it is returned as a :class:`DamagedEntry`."""
        try:
            with open(self.path, 'rb') as f:
                data = f.read()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise Damaged('cannot read the journal %s: %s' % (
                self.path, e.strerror))
        lines = data.split(b'\n')
        # the last piece has no newline: a line being written when its
        # writer died (or nothing)
        complete, tail = lines[:-1], lines[-1]
        result = []
        pending = None          # (number, reason) of a line that may be cut
        for number, raw in enumerate(complete, 1):
            if not raw.strip():
                continue
            entry, reason = _parse(raw)
            if entry is not None and entry.get('after_cut') and pending:
                pending = None          # the line before was cut short
            if pending:
                self._damaged(result, pending, strict)
                pending = None
            if entry is None:
                pending = (number, reason)
                continue
            result.append(entry)
        if pending:
            self._damaged(result, pending, strict)
        del tail   # cut short by a crash: never an entry
        return result

    def _damaged(self, result, pending, strict):
        number, reason = pending
        if strict:
            raise Damaged(
                'the journal %s is damaged at line %d (%s); it was not '
                'written by collective.safedeploy: restore that line from a '
                'backup or remove it' % (self.path, number, reason))
        result.append(DamagedEntry(event='damaged', line=number,
                                   reason=reason, damaged=True))


def _parse(raw):
    """(entry, None) or (None, what is wrong with the line)."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None, 'not JSON'
    if not isinstance(entry, dict):
        return None, 'not a JSON object'
    if not isinstance(entry.get('event'), str):
        return None, 'no event'
    if 'name' in entry and not isinstance(entry['name'], (str, type(None))):
        return None, 'a name that is not a string'
    if 'time' in entry and not isinstance(entry['time'], str):
        return None, 'a time that is not a string'
    return entry, None
