"""The one store: immutable generations, an append-only journal, a lock,
and a ``current`` link flipped atomically.

Code releases, data generations, copy and btrfs snapshots and package
indexes are all kept in one::

    releases/                      DATA/generations/     indexes/
      .safedeploy-store.json         ...                   ...
      .journal   .lock
      1.0/  safedeploy-manifest.json 1/ ...                1.0/ ...
      1.1/  ...
    current -> releases/1.1        DATA/current -> generations/2
                                                         (no current link)

A generation is *staged* (its directory exists and carries a staging
marker), *completed* (its manifest is written atomically: from then on it
is immutable) and, in a store with a ``current`` link, *flipped* to (a new
symlink renamed over ``current``).  Only a complete generation can become
current, so ``current`` resolves to a complete one whatever moment a
process is killed at.

A store acts only on what it created.  Its directory carries a marker
naming its kind (``.safedeploy-store.json``); an existing, non-empty
directory without one is refused, never used.  Recover, prune and discard
touch only entries that carry the store's own marker (its staging marker
or its manifest) *and* appear in its journal; anything else in the
directory is left alone.  A damaged record (a manifest that is not a JSON
object, a journal line that is not ours) stops a writer with one line and
is shown as damaged by a listing; it is never a reason to delete.

(One module on purpose: every rule about what a generation is and who may
touch it is here, and nowhere else.)
"""
import collections
import json
import os
import re

from . import fsutil
from .errors import ConfigurationError
from .errors import Damaged
from .errors import NotFound
from .errors import Refused
from .journal import Journal
from .journal import now
from .lock import locked

NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._+-]{0,99}\Z')
MANIFEST = 'safedeploy-manifest.json'
STAGING = 'safedeploy-staging.json'
FAILED = 'safedeploy-failed.txt'
MARKER = '.safedeploy-store.json'
JOURNAL = '.journal'
LOCK = '.lock'

# states, derived from the journal
BUILDING = 'building'
FAILED_STATE = 'failed'
BUILT = 'built'
PUBLISHED = 'published'
UNCHECKED = 'unchecked'
ROLLED_BACK = 'rolled back'
BAD = 'bad'
PRUNED = 'pruned'
DAMAGED = 'damaged'
GOOD = (BUILT, PUBLISHED, ROLLED_BACK)

# journal events, one meaning each:
#   started      NAME is being made (its directory may or may not exist yet)
#   built        NAME is complete (its manifest is written)
#   failed       NAME will not be completed (reason)
#   published    current -> NAME (previous, via: why it was flipped to;
#                checking: its health gate is still to pass)
#   checked      NAME passed its health gate after it was flipped to (a
#                NAME left "checking" was flipped to by a killed run)
#   rolled-back  NAME was left by a rollback (to: where current went)
#   bad          NAME failed its health check
#   pruned       NAME was removed (reason)
#   verified     NAME was read whole and is what it recorded (a snapshot)
#   verify-failed  NAME was read whole and is not (problem; found_by: the
#                snapshot whose reading found it, when another one)
STATE_OF_EVENT = {
    'started': BUILDING, 'failed': FAILED_STATE, 'built': BUILT,
    'published': PUBLISHED, 'checked': PUBLISHED,
    'rolled-back': ROLLED_BACK, 'bad': BAD, 'pruned': PRUNED,
}

VERDICTS = ('verified', 'verify-failed')

# A store without a current link (snapshots, package indexes).
NO_CURRENT = None


def validate_name(name, what='tag'):
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigurationError(
            'invalid %s %r: use 1 to 100 letters, digits, ".", "_", "+" or '
            '"-", starting with a letter or digit' % (what, name))
    return name


Kind = collections.namedtuple('Kind', 'name what listing rebuild')
"""What a store holds, for its messages: ``name`` ('release'), ``what`` a
name is called ('tag'), ``listing`` (the command that lists them),
``rebuild`` (how a pruned one is made again, or None)."""

RELEASE = Kind('release', 'tag', 'bin/rollback --list',
               'rebuild it with bin/buildout safedeploy:tag=%s')
DATA_GENERATION = Kind('data generation', 'generation', 'bin/snapshot --list',
                       None)
SNAPSHOT = Kind('snapshot', 'snapshot name', 'bin/snapshot --list', None)
PACKAGE_INDEX = Kind('package index', 'tag', 'bin/index --list',
                     'rebuild its release with bin/buildout '
                     'safedeploy:tag=%s')


def _read_marker(directory):
    path = os.path.join(directory, MARKER)
    try:
        with open(path) as f:
            marker = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict):
        raise Damaged('the marker %s is damaged; restore it from a backup'
                      % path)
    return marker


def _marker_kind(directory):
    """The kind of store ``directory`` is, when it is one; else None."""
    try:
        marker = _read_marker(directory)
    except Damaged:
        return None
    return marker.get('kind') if marker else None


def forbidden(directory):
    """The directories nothing of ours may be: ``/`` and the user's home."""
    home = os.path.expanduser('~')
    real = os.path.realpath(directory)
    return real == '/' or (home not in ('', '/') and
                           real == os.path.realpath(home))


def check_apart(managed, others=(), containers=()):
    """Refuse directories that overlap: each of ``managed`` ({what: path},
    the directories a store or pool lives in) must be apart from every
    other one and from each of ``others`` ({what: path}: data roots,
    shared directories) -- neither the same nor one inside the other --,
    may be inside but not be nor contain one of ``containers`` (the
    buildout directory), and is never ``/`` or the user's home."""
    managed = [(k, os.path.realpath(v)) for k, v in managed.items() if v]
    others = [(k, os.path.realpath(v)) for k, v in dict(others).items() if v]
    for what, path in managed:
        for other, where in dict(containers).items():
            where = os.path.realpath(where)
            if fsutil.is_within(where, path):
                raise ConfigurationError(
                    '%s (%s) is %s (%s) or holds it; give %s a directory of '
                    'its own, e.g. inside it' % (what, path, other, where,
                                                 what))
    for what, path in managed:
        if forbidden(path):
            raise ConfigurationError(
                '%s is %s; give it a directory of its own, e.g. '
                '${buildout:directory}/%s' % (what, path, what.split(':')[-1]
                                              .replace('-directory', '')))
    for i, (what, path) in enumerate(managed):
        for other, where in managed[i + 1:] + others:
            if path == where or fsutil.is_within(path, where) or \
                    fsutil.is_within(where, path):
                raise ConfigurationError(
                    '%s (%s) and %s (%s) overlap; give %s a directory of its '
                    'own' % (what, path, other, where, what))


def owned(directory, kind, legacy=None):
    """True when ``directory`` carries our marker for ``kind``; False when
    it does not exist or is empty.  A directory with anything else in it
    is refused (:class:`Refused`), unless ``legacy()`` says an earlier
    version of collective.safedeploy made it; ``/`` and the user's home
    are always refused."""
    if forbidden(directory):
        raise Refused('%s is not a directory collective.safedeploy may use '
                      'for %ss; configure one of its own' % (directory, kind))
    if not os.path.lexists(directory):
        return False
    if os.path.islink(directory):
        raise Refused(
            '%s is a symbolic link (to %s); it is not used for %ss: '
            'configure the directory itself, or another one' % (
                directory, os.readlink(directory), kind))
    if not os.path.isdir(directory):
        raise Refused(
            '%s is not a directory; it cannot hold %ss: move it away or '
            'configure another directory' % (directory, kind))
    marker = _read_marker(directory)
    if marker is not None:
        if marker.get('kind') != kind:
            raise Refused(
                '%s holds %ss, not %ss; configure another directory for the '
                '%ss' % (directory, marker.get('kind'), kind, kind))
        return True
    contents = sorted(n for n in os.listdir(directory) if n != LOCK)
    if not contents:
        return False
    if legacy is not None and legacy():
        return True
    parent = _marker_kind(os.path.dirname(os.path.abspath(directory)))
    if parent:
        raise Refused(
            '%s is one of the %ss in %s, not a directory for %ss: configure '
            'that directory, or another one' % (
                directory, parent, os.path.dirname(directory), kind))
    raise Refused(
        '%s exists and was not made by collective.safedeploy (it holds %s); '
        'it is not used for %ss: configure an empty or new directory' % (
            directory, ', '.join(contents[:3]) +
            (', ...' if len(contents) > 3 else ''), kind))


def claim(directory, kind, legacy=None):
    """Make ``directory`` ours before the first write: create it with its
    marker, or check that it is ours (:func:`owned`)."""
    if not owned(directory, kind, legacy) or not os.path.exists(
            os.path.join(directory, MARKER)):
        os.makedirs(directory, exist_ok=True)
        fsutil.atomic_write_json(os.path.join(directory, MARKER), dict(
            kind=kind, id=fsutil.random_suffix(32), created=now()))


class Store:
    """The generations in ``directory`` and, unless ``current`` is
    :data:`NO_CURRENT`, the ``current`` link to one of them."""

    def __init__(self, directory, kind, current=NO_CURRENT,
                 manifest=MANIFEST, remove=None):
        """``remove(path)`` removes a generation's directory when a plain
        removal is not the way (a btrfs subvolume)."""
        self.directory = os.path.abspath(directory)
        self.remove = remove or fsutil.remove_tree
        self.current = os.path.abspath(current) if current else None
        self.kind = kind
        self.manifest_name = manifest
        self.journal = Journal(os.path.join(self.directory, JOURNAL))
        self.lock_path = os.path.join(self.directory, LOCK)
        self.marker_path = os.path.join(self.directory, MARKER)

    def __repr__(self):
        return '<Store of %ss in %s>' % (self.kind.name, self.directory)

    # -- ownership ----------------------------------------------------------

    def owned(self):
        """True when the directory is ours; False when it does not exist
        or is empty; refuses anything else (see :func:`owned`)."""
        return owned(self.directory, self.kind.name, self._legacy)

    def _legacy(self):
        """A directory an earlier version made (no marker yet): it has our
        journal, and every generation in it is in the journal."""
        if not os.path.isfile(self.journal.path):
            return False
        try:
            names = {e.get('name') for e in self.journal.entries()}
        except Damaged:
            return False
        if not names:
            return False
        for n in os.listdir(self.directory):
            p = os.path.join(self.directory, n)
            if n.startswith('.') or not os.path.isdir(p):
                continue
            if n not in names:
                return False
        return True

    def claim(self):
        """Make the directory ours before the first write (see
        :func:`claim`)."""
        claim(self.directory, self.kind.name, self._legacy)

    # -- names and paths ----------------------------------------------------

    def path(self, name):
        validate_name(name, self.kind.what)
        return os.path.join(self.directory, name)

    def manifest_path(self, name):
        return os.path.join(self.path(name), self.manifest_name)

    def manifest(self, name):
        """The manifest of a complete generation; None when there is none;
        :class:`Damaged` when it is not what we write."""
        path = self.manifest_path(name)
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except (OSError, ValueError):
            raise Damaged('the manifest %s is damaged (not JSON); restore it '
                          'from a backup or remove that %s by hand' % (
                              path, self.kind.name))
        if not isinstance(data, dict):
            raise Damaged('the manifest %s is not a JSON object; restore it '
                          'from a backup or remove that %s by hand' % (
                              path, self.kind.name))
        return data

    def entry(self, name):
        """'complete', 'staging' (ours, not complete), 'damaged', or None
        (not there, or not ours)."""
        path = os.path.join(self.directory, name)
        if not NAME.match(name) or not os.path.isdir(path) or \
                os.path.islink(path):
            return None
        try:
            manifest = self.manifest(name)
        except Damaged:
            return DAMAGED
        if manifest is not None:
            kind = manifest.get('kind', self.kind.name)
            return 'complete' if kind == self.kind.name else None
        staging = os.path.join(path, STAGING)
        try:
            with open(staging) as f:
                info = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return DAMAGED
        if not isinstance(info, dict) or \
                info.get('kind', self.kind.name) != self.kind.name:
            return DAMAGED if not isinstance(info, dict) else None
        return 'staging'

    def staging_info(self, name):
        try:
            with open(os.path.join(self.path(name), STAGING)) as f:
                info = json.load(f)
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def is_complete(self, name):
        try:
            return self.manifest(name) is not None
        except Damaged:
            return False

    def exists(self, name):
        return os.path.isdir(self.path(name))

    # -- the current link ---------------------------------------------------

    def current_name(self):
        """The name ``current`` points to, or None when there is no link.

        A ``current`` that is not a symlink into our directory is refused:
        it is somebody else's, and we never overwrite it.
        """
        if self.current is None or not os.path.lexists(self.current):
            return None
        if not os.path.islink(self.current):
            raise Refused(
                '%s exists and is not a symlink, so it is not the current '
                'link of the %ss in %s; it is left alone: check the path '
                'configured for current (a leftover of yours there: move it '
                'away)' % (self.current, self.kind.name, self.directory))
        target = os.readlink(self.current)
        resolved = os.path.normpath(os.path.join(
            os.path.dirname(self.current), target))
        parent, name = os.path.split(resolved)
        if (os.path.realpath(parent) != os.path.realpath(self.directory)
                or not NAME.match(name)):
            other = _marker_kind(parent)
            raise Refused(
                '%s points to %s, outside %s%s, so it is not the current link '
                'of these %ss; it is left alone: check the path configured '
                'for current' % (
                    self.current, target, self.directory,
                    ' (it is the current link of the %ss in %s)' % (
                        other, parent) if other else '', self.kind.name))
        return name

    def flip(self, name, via='flip', checking=False, **fields):
        """Point ``current`` at the complete generation ``name``; ``via``
        says why (publish, rollback, flip-back, switch, restore ...).
        ``checking``: a health gate is still to pass (:meth:`checked`);
        until then ``name`` is :data:`UNCHECKED`."""
        if self.current is None:
            raise Refused('%ss have no current link' % self.kind.name)
        if not self.is_complete(name):
            raise Refused('%s %s is not complete; it cannot become current'
                          % (self.kind.name, name))
        previous = self.current_name()
        os.makedirs(os.path.dirname(self.current), exist_ok=True)
        target = os.path.relpath(self.path(name),
                                 os.path.dirname(self.current))
        fsutil.atomic_symlink(target, self.current)
        if checking:
            fields['checking'] = True
        self.journal.append('published', name=name, previous=previous,
                            via=via, **fields)
        return previous

    def checked(self, name):
        """``name``, flipped to with ``checking``, passed its gate."""
        self.journal.append('checked', name=name)

    def flipped_from(self, name):
        """What was current when ``current`` was last pointed at
        ``name`` (None: nothing, or it never was)."""
        previous = None
        for entry in self.journal.entries(strict=False):
            if entry.get('event') == 'published' and \
                    entry.get('name') == name:
                previous = entry.get('previous')
        return previous

    def remove_current(self):
        """No generation is current any more (the first release failed its
        health check)."""
        if self.current and os.path.lexists(self.current):
            os.unlink(self.current)
            fsutil.fsync_directory(os.path.dirname(self.current))

    # -- staging and completing ---------------------------------------------

    def lock(self, what=None):
        self.claim()
        return locked(self.lock_path,
                      what or 'a change of the %ss in %s' % (
                          self.kind.name, self.directory))

    def stage(self, name, make=None, **info):
        """Create the directory of a new generation (under the lock).

        ``make(path)``, when given, creates the directory ``path`` instead
        of an empty one (e.g. as a filesystem snapshot already holding the
        generation's files); it gets its name only once ``make`` returned.

        A complete generation is never staged again: rebuilding it is
        :meth:`discard` first, which refuses the current one.
        """
        self.claim()
        path = self.path(name)
        state = self.entry(name)
        if state == 'complete':
            raise Refused('%s %s already exists and is immutable' % (
                self.kind.name, name))
        if state == DAMAGED:
            raise Damaged('%s %s in %s is damaged; remove it by hand or '
                          'choose another name' % (
                              self.kind.name, name, self.directory))
        if os.path.lexists(path):
            if state != 'staging' or name not in self.journal_names():
                raise Refused(
                    '%s exists and was not made by collective.safedeploy; '
                    'move it away or choose another name' % path)
            # what a failed or killed run left: start again from scratch
            self.remove(path)
        self.journal.append('started', name=name, **info)
        tmp = os.path.join(self.directory, '.%s.staging.tmp' % name)
        if os.path.lexists(tmp):
            self.remove(tmp)
        try:
            (make or os.mkdir)(tmp)
            fsutil.atomic_write_json(os.path.join(tmp, STAGING), dict(
                info, kind=self.kind.name, name=name, pid=os.getpid()))
        except BaseException:
            # failed or interrupted while it was made: nothing of it stays
            # (what a killed run leaves is removed by the next, above)
            if os.path.lexists(tmp):
                self.remove(tmp)
            raise
        os.rename(tmp, path)
        fsutil.fsync_directory(self.directory)
        return path

    def mark_failed(self, name, reason):
        path = self.path(name)
        if self.entry(name) == 'staging':
            fsutil.atomic_write(os.path.join(path, FAILED), reason + '\n')
        self.journal.append('failed', name=name, reason=reason)

    def complete(self, name, manifest, seal=None):
        """Write the manifest: from now on the generation is immutable.
        ``seal(path)``, when given, runs last (e.g. makes a btrfs
        subvolume read-only)."""
        path = self.path(name)
        manifest = dict(manifest, name=name, kind=self.kind.name)
        fsutil.atomic_write_json(os.path.join(path, self.manifest_name),
                                 manifest)
        for marker in (STAGING, FAILED):
            p = os.path.join(path, marker)
            if os.path.exists(p):
                os.unlink(p)
        fsutil.fsync_directory(path)
        if seal is not None:
            seal(path)
        self.journal.append('built', name=name)
        return manifest

    def discard(self, name, reason):
        """Remove one of our generations (never the current one)."""
        if name == self.current_name():
            raise Refused('%s %s is current; it is never removed or rebuilt '
                          'in place' % (self.kind.name, name))
        if self.entry(name) not in ('complete', 'staging'):
            raise Refused('%s is not a %s collective.safedeploy made; it is '
                          'left alone' % (self.path(name), self.kind.name))
        if name not in self.journal_names():
            raise Refused('%s %s is not in the journal %s; it is left alone'
                          % (self.kind.name, name, self.journal.path))
        self.remove(self.path(name))
        self.journal.append('pruned', name=name, reason=reason)

    def recover(self):
        """Mark what killed runs left behind (call under the lock); returns
        the names it marked failed."""
        fsutil.empty_trash(self.directory, remove=self.remove)
        if self.current is not None:
            # a flip killed between symlink and rename leaves its new link
            parent, base = os.path.split(self.current)
            try:
                leftovers = [n for n in os.listdir(parent)
                             if n.startswith('.%s.' % base)
                             and n.endswith('.tmp')]
            except OSError:
                leftovers = []
            for name in leftovers:
                if os.path.islink(os.path.join(parent, name)):
                    os.unlink(os.path.join(parent, name))
        states = self.states()
        marked = []
        for name in self.on_disk():
            if self.entry(name) != 'staging':
                continue
            failed = os.path.join(self.path(name), FAILED)
            if not os.path.exists(failed):
                reason = 'the run making it was killed'
                fsutil.atomic_write(failed, reason + '\n')
                marked.append(name)
                if states.get(name) != FAILED_STATE:
                    self.journal.append('failed', name=name, reason=reason)
        return marked

    # -- reading the history ------------------------------------------------

    def journal_names(self, strict=True):
        return {e.get('name') for e in self.journal.entries(strict)
                if e.get('name')}

    def on_disk(self, strict=True):
        """Our generations on disk (complete, staging or damaged) that the
        journal knows, sorted by name."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        known = self.journal_names(strict)
        return sorted(n for n in names if n in known and
                      self.entry(n) is not None)

    def states(self, strict=True):
        state = {}
        for entry in self.journal.entries(strict):
            name, event = entry.get('name'), entry['event']
            if event in STATE_OF_EVENT and name:
                state[name] = STATE_OF_EVENT[event]
                if event == 'published' and entry.get('checking'):
                    state[name] = UNCHECKED
        return state

    def order(self, strict=True):
        """Names in the order they were (last) completed."""
        return self._last('built', strict)

    def started_order(self, strict=True):
        """Names in the order their last making started."""
        return self._last('started', strict)

    def _last(self, event, strict):
        """Names by the last time ``event`` happened to them: one made
        again moves on to its new place."""
        names = []
        for entry in self.journal.entries(strict):
            if entry['event'] == event and entry.get('name'):
                if entry['name'] in names:
                    names.remove(entry['name'])
                names.append(entry['name'])
        return names

    def verdicts(self, strict=True):
        """{name: its last ``verified`` or ``verify-failed`` entry}: what
        the last complete reading of each found, since its making last
        started (a name made again has no verdict yet)."""
        verdicts = {}
        for entry in self.journal.entries(strict):
            name = entry.get('name')
            if not name:
                continue
            if entry['event'] in VERDICTS:
                verdicts[name] = entry
            elif entry['event'] == 'started':
                verdicts.pop(name, None)
        return verdicts

    def history(self, strict=True):
        """One dict per generation on disk or in the journal, in the order
        their making started."""
        entries = self.journal.entries(strict)
        states = self.states(strict)
        try:
            current = self.current_name()
        except Refused:
            if strict:
                raise
            current = None
        built_at, previous = {}, {}
        for entry in entries:
            if entry['event'] == 'built' and entry.get('name'):
                built_at[entry['name']] = entry['time']
            elif entry['event'] == 'published' and entry.get('name'):
                previous[entry['name']] = entry.get('previous')
        names = self.started_order(strict)
        names += [n for n in self.order(strict) if n not in names]
        names += [n for n in self.on_disk(strict) if n not in names]
        rows = []
        for name in names:
            on_disk = self.entry(name)
            state = states.get(name, BUILT if on_disk == 'complete'
                               else FAILED_STATE)
            if on_disk == DAMAGED:
                state = DAMAGED
            elif state in GOOD and on_disk != 'complete':
                state = FAILED_STATE if on_disk == 'staging' else PRUNED
            if state == PRUNED and on_disk:
                continue
            rows.append(dict(
                name=name, state=state, built=built_at.get(name),
                current=(name == current), exists=on_disk is not None,
                previous=previous.get(name)))
        for entry in entries:
            if entry.get('damaged'):
                rows.append(dict(name=None, state=DAMAGED, built=None,
                                 current=False, exists=False,
                                 line=entry['line'],
                                 reason=entry['reason']))
        return rows

    def good(self):
        """Complete generations in a good state, oldest first."""
        return [r['name'] for r in self.history()
                if r['state'] in GOOD and r['exists']
                and self.is_complete(r['name'])]

    def previous_good(self, before=None):
        """The newest good generation completed before ``before`` (default:
        the current one)."""
        before = before or self.current_name()
        order = self.order()
        good = self.good()
        if before not in order:
            candidates = good
        else:
            candidates = [n for n in order[:order.index(before)] if n in good]
        candidates = [n for n in candidates if n != before]
        return candidates[-1] if candidates else None

    def resolve(self, name):
        """Check that ``name`` can become current; return it."""
        validate_name(name, self.kind.what)
        state = self.states().get(name)
        entry = self.entry(name)
        if entry is None:
            if state == PRUNED:
                raise NotFound('%s %s was pruned%s' % (
                    self.kind.name, name, '; ' + self.kind.rebuild % name
                    if self.kind.rebuild else ''))
            raise NotFound('no %s %s in %s; %s shows the ones there are' % (
                self.kind.name, name, self.directory, self.kind.listing))
        if entry == DAMAGED:
            raise Damaged('%s %s is damaged (its manifest is not what '
                          'collective.safedeploy writes); choose another one'
                          % (self.kind.name, name))
        if entry != 'complete' or state in (FAILED_STATE, BUILDING):
            raise Refused('%s %s was not completed; it cannot become current '
                          '(%s shows the good ones)' % (
                              self.kind.name, name, self.kind.listing))
        if state == BAD:
            raise Refused('%s %s is marked bad (it failed its health check); '
                          'choose another one' % (self.kind.name, name))
        return name

    # -- pruning ------------------------------------------------------------

    def prune(self, keep, protect=(), dry_run=False):
        """Keep at most ``keep`` generations: remove failed, killed and bad
        ones first (oldest first), then the oldest good ones -- never the
        current one, the good one that was current before it (or, when
        that is not known or not good, the previous good one built), the
        newest good one, nor anything in ``protect``.  (After a rollback to
        an older release and a new one built, what ran before the new one
        is that older release, not the one rolled back from.)  Damaged
        entries are never removed.  Returns the names removed (with
        ``dry_run``: the names it would remove; nothing is touched)."""
        current = self.current_name()
        good = self.good()
        before = self.flipped_from(current)
        if before not in good:
            before = self.previous_good(current)
        protected = set(protect) | {current, before}
        if good:
            protected.add(good[-1])
        states = self.states()
        rows = [r for r in self.history() if r['exists'] and r['name']]
        present = [r['name'] for r in rows if r['state'] != DAMAGED]
        started = self.started_order()

        def age(name):
            return started.index(name) if name in started else -1
        failed = sorted((n for n in present if states.get(n) not in GOOD
                         or not self.is_complete(n)), key=age)
        complete = [n for n in self.order() if n in present
                    and n not in failed]
        removed = []
        for name in failed + complete:
            if len(present) - len(removed) <= keep:
                break
            if name in protected:
                continue
            removed.append(name)
            if dry_run:
                continue
            self.discard(name, 'more than keep=%d' % keep
                         if name in complete else 'failed, more than keep=%d'
                         % keep)
        return removed
