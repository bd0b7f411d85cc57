"""An append-only journal of JSON lines.

The journal, not file times, is where release order and state come from.
Each entry is one line, appended with ``O_APPEND`` and fsynced before the
step it records is taken as done.  A line cut short by a crash is ignored
when reading and never followed by a glued-on entry.
"""
import datetime
import getpass
import json
import os
import socket


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='microseconds')


def who():
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in a container
        user = str(os.getuid())
    return user, socket.gethostname()


class Journal:

    def __init__(self, path):
        self.path = path

    def append(self, event, **fields):
        user, host = who()
        entry = dict(fields, event=event, time=now(), user=user, host=host,
                     pid=os.getpid())
        line = json.dumps(entry, sort_keys=True).encode('utf-8') + b'\n'
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, 'rb') as f:
                    f.seek(size - 1)
                    if f.read(1) != b'\n':
                        line = b'\n' + line  # a killed writer left half a line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def entries(self):
        try:
            with open(self.path, 'rb') as f:
                data = f.read()
        except FileNotFoundError:
            return []
        result = []
        for raw in data.split(b'\n'):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # cut short by a crash
            if isinstance(entry, dict) and 'event' in entry:
                result.append(entry)
        return result
