"""Where ``bin/snapshot --export NAME DIR`` writes before ``DIR`` exists,
and what a killed export leaves there.

An export writes the snapshot's files into a hidden staging directory
beside ``DIR`` (``DIR`` is outside the data root, often on another
filesystem, so the staging cannot be in the data root: a rename does not
cross filesystems), and renames the files into place once they are all
there and checked::

    PARENT/.DIR.exporting/                    the staging directory
    PARENT/.DIR.exporting/safedeploy-export.json      our marker
    PARENT/.DIR.exporting/DIR/...             the files, renamed to PARENT/DIR

Before the staging directory is created it is recorded in the data root
(``DATA/generations/.exports/<id>.json``: its path, the snapshot, an id),
and it carries a marker with the same id.  An export that ends, however it
ends short of SIGKILL, removes it and then its record: the data root is as
it was.  One that was killed leaves both; the next export, snapshot or
destroy of the data root removes the staging directory: every export holds
the data root's lock while it runs, so a record found under that lock is
one whose export is gone.  Only a directory that is recorded *and* carries
the recorded marker (or holds nothing, or nothing but the marker: the
export was killed right after creating it) is removed, marker last, so
that a removal killed half-way is finished by the next run.  Anything
else there is left alone, with a warning.

(A record file rather than journal entries: an export changes nothing of
the data, and a refused or failed one leaves the data root exactly as it
was.)
"""
import json
import logging
import os

from ..core import fsutil
from ..core.errors import Refused

logger = logging.getLogger('collective.safedeploy')

MARKER = 'safedeploy-export.json'
RECORDS = '.exports'


def staging_path(directory):
    parent, base = os.path.split(directory)
    return os.path.join(parent, '.%s.exporting' % base)


def records_directory(root):
    return os.path.join(root.generations.directory, RECORDS)


def _records(root):
    """The records of exports that did not end: (path, record)."""
    directory = records_directory(root)
    fsutil.empty_trash(directory)      # a record being written when killed
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    result = []
    for name in names:
        path = os.path.join(directory, name)
        result.append((path, fsutil.read_json_object(path) or {}))
    return result


def _forget(record_path):
    os.unlink(record_path)
    directory = os.path.dirname(record_path)
    try:
        os.rmdir(directory)            # the last one: the root as it was
    except OSError:
        pass
    fsutil.fsync_directory(os.path.dirname(directory))


def _ours(path, id):
    """True when ``path`` is a staging directory the export recorded as
    ``id`` made: it carries our marker with that id, or it holds nothing
    but (what may be) the marker being written."""
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    names = os.listdir(path)
    if not names or names == [MARKER] and not _marker_id(path):
        return True
    return _marker_id(path) == id


def _marker_id(path):
    marker = fsutil.read_json_object(os.path.join(path, MARKER))
    return marker.get('id') if marker else None


def remove_killed(root):
    """Remove the staging directories killed exports of ``root`` left
    (call under ``root.lock()``).  Returns their paths."""
    removed = []
    for record_path, record in _records(root):
        path, id = record.get('staging'), record.get('id')
        if not isinstance(path, str) or not os.path.isabs(path) or not id:
            logger.warning('%s is not a record of an export; it is removed, '
                           'nothing it names', record_path)
        elif not os.path.lexists(path):
            pass     # killed before it was created, or after it was removed
        elif _ours(path, id):
            fsutil.remove_marked(path, MARKER)
            logger.info('removed %s, left by an export of snapshot %s that '
                        'was killed', path, record.get('snapshot'))
            removed.append(path)
        else:
            logger.warning('%s, where a killed export of snapshot %s '
                           'staged, is not what it made; it is left alone',
                           path, record.get('snapshot'))
        _forget(record_path)
    return removed


class Staging:
    """The staging directory of one export of snapshot ``name`` into the
    new directory ``directory`` (call under ``root.lock()``, after
    :func:`remove_killed`)."""

    def __init__(self, root, name, directory):
        self.name = name
        self.directory = directory
        self.path = staging_path(directory)
        self.files = os.path.join(self.path, os.path.basename(directory))
        self.id = fsutil.random_suffix(32)
        self.record = os.path.join(records_directory(root),
                                   '%s.json' % self.id)

    def make(self):
        """Record the staging directory, create it with our marker; its
        ``files`` directory is where the export writes."""
        if os.path.lexists(self.path):
            raise Refused(
                '%s exists and is not a staging directory of ours (an export '
                'by an earlier version, killed, leaves one); remove it or '
                'export to another directory' % self.path)
        fields = dict(id=self.id, staging=self.path, target=self.directory,
                      snapshot=self.name, pid=os.getpid())
        os.makedirs(os.path.dirname(self.record), exist_ok=True)
        fsutil.atomic_write_json(self.record, fields)
        try:
            os.mkdir(self.path)
        except OSError as e:
            _forget(self.record)
            raise Refused('cannot write into %s (%s); name a directory you '
                          'can write to' % (os.path.dirname(self.path),
                                            e.strerror))
        with open(os.path.join(self.path, MARKER), 'x') as f:
            json.dump(fields, f)
            f.flush()
            os.fsync(f.fileno())
        os.mkdir(self.files)
        return self.files

    def finish(self):
        """The files become ``directory``; the staging directory and its
        record go."""
        os.rename(self.files, self.directory)
        fsutil.fsync_directory(os.path.dirname(self.directory))
        self.discard()

    def discard(self):
        """Nothing of the staging directory stays, nor its record (the
        export failed or was interrupted; or it is done)."""
        fsutil.remove_marked(self.path, MARKER)
        _forget(self.record)
