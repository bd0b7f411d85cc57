"""A directory of immutable generations, an append-only journal, and a
``current`` link flipped atomically.

This one mechanism carries both code releases (``releases/<tag>``,
``current``) and data generations (``DATA/generations/<N>``,
``DATA/current``)::

    releases/                      DATA/generations/
      .journal   .lock               .journal   .lock
      1.0/  safedeploy-manifest.json 1/  safedeploy-manifest.json
      1.1/  ...                      2/  filestorage/Data.fs ...
    current -> releases/1.1        DATA/current -> generations/2

A generation is *staged* (its directory exists, with a staging marker),
then *completed* (its manifest is written atomically: from then on it is
immutable), then *flipped* to (``current`` replaced in one ``rename``).
Only a complete generation can become current, so ``current`` always
resolves to a complete one, whatever moment a process is killed at.
"""
import os
import re

from . import fsutil
from .errors import ConfigurationError
from .errors import NotFound
from .errors import Refused
from .journal import Journal
from .lock import locked

NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._+-]{0,99}\Z')
MANIFEST = 'safedeploy-manifest.json'
STAGING = 'safedeploy-staging.json'
FAILED = 'safedeploy-failed.txt'

# states, derived from the journal
BUILDING = 'building'
FAILED_STATE = 'failed'
BUILT = 'built'
PUBLISHED = 'published'
ROLLED_BACK = 'rolled back'
BAD = 'bad'
PRUNED = 'pruned'
GOOD = (BUILT, PUBLISHED, ROLLED_BACK)


def validate_name(name, kind='tag'):
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigurationError(
            'invalid %s %r: use 1 to 100 letters, digits, ".", "_", "+" or '
            '"-", starting with a letter or digit' % (kind, name))
    return name


class Generations:
    """The generations in ``directory`` and the ``current`` link to one."""

    def __init__(self, directory, current, kind='release', what='tag'):
        self.directory = os.path.abspath(directory)
        self.current = os.path.abspath(current)
        self.kind = kind          # 'release', 'data generation'
        self.what = what          # what a name is called: 'tag', 'generation'
        self.journal = Journal(os.path.join(self.directory, '.journal'))
        self.lock_path = os.path.join(self.directory, '.lock')

    # -- names and paths --------------------------------------------------

    def path(self, name):
        validate_name(name, self.what)
        return os.path.join(self.directory, name)

    def manifest_path(self, name):
        return os.path.join(self.path(name), MANIFEST)

    def manifest(self, name):
        import json
        try:
            with open(self.manifest_path(name)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def is_complete(self, name):
        return self.manifest(name) is not None

    def exists(self, name):
        return os.path.isdir(self.path(name))

    # -- the current link -------------------------------------------------

    def current_name(self):
        """The name ``current`` points to, or None when there is no link.

        A ``current`` that is not a symlink into our directory is refused:
        it is somebody else's, and we never overwrite it.
        """
        if not os.path.lexists(self.current):
            return None
        if not os.path.islink(self.current):
            raise Refused(
                '%s exists and is not a symlink; move it away (it is not '
                'ours to replace) and run again' % self.current)
        target = os.readlink(self.current)
        resolved = os.path.normpath(os.path.join(
            os.path.dirname(self.current), target))
        parent, name = os.path.split(resolved)
        if (os.path.realpath(parent) != os.path.realpath(self.directory)
                or not NAME.match(name)):
            raise Refused(
                '%s points to %s, outside %s; point it at a %s there or '
                'remove it, then run again' % (
                    self.current, target, self.directory, self.kind))
        return name

    def flip(self, name, event=PUBLISHED, **fields):
        """Point ``current`` at the complete generation ``name``."""
        if not self.is_complete(name):
            raise Refused('%s %s is not complete; it cannot become current'
                          % (self.kind, name))
        previous = self.current_name()
        os.makedirs(os.path.dirname(self.current), exist_ok=True)
        target = os.path.relpath(self.path(name),
                                 os.path.dirname(self.current))
        fsutil.atomic_symlink(target, self.current)
        self.journal.append(event, name=name, previous=previous, **fields)
        return previous

    # -- staging and completing -------------------------------------------

    def lock(self, what=None):
        os.makedirs(self.directory, exist_ok=True)
        return locked(self.lock_path,
                      what or 'a %s build or rollback' % self.kind)

    def stage(self, name, make=None, **info):
        """Create the directory of a new generation (under the lock).

        ``make(path)``, when given, creates the directory ``path`` instead
        of an empty one (e.g. as a filesystem snapshot already holding the
        generation's files); it is renamed to the generation's name only
        once ``make`` returned.

        A complete generation is never staged again: rebuilding it is
        :meth:`discard` first, which refuses the current one.
        """
        path = self.path(name)
        if self.is_complete(name):
            raise Refused('%s %s already exists and is immutable' % (
                self.kind, name))
        if os.path.lexists(path):
            # what a failed or killed run left: start again from scratch
            fsutil.remove_tree(path)
        os.makedirs(self.directory, exist_ok=True)
        tmp = os.path.join(self.directory, '.%s.staging.tmp' % name)
        if os.path.lexists(tmp):
            fsutil.remove_tree(tmp)
        (make or os.mkdir)(tmp)
        fsutil.atomic_write_json(os.path.join(tmp, STAGING),
                                 dict(info, name=name, pid=os.getpid()))
        os.rename(tmp, path)
        fsutil.fsync_directory(self.directory)
        self.journal.append('started', name=name, **info)
        return path

    def mark_failed(self, name, reason):
        path = self.path(name)
        if os.path.isdir(path) and not self.is_complete(name):
            fsutil.atomic_write(os.path.join(path, FAILED), reason + '\n')
        self.journal.append('failed', name=name, reason=reason)

    def complete(self, name, manifest):
        """Write the manifest: from now on the generation is immutable."""
        path = self.path(name)
        manifest = dict(manifest, name=name)
        fsutil.atomic_write_json(os.path.join(path, MANIFEST), manifest)
        for marker in (STAGING, FAILED):
            p = os.path.join(path, marker)
            if os.path.exists(p):
                os.unlink(p)
        fsutil.fsync_directory(path)
        self.journal.append('built', name=name)
        return manifest

    def discard(self, name, reason):
        """Remove a generation (never the current one)."""
        if name == self.current_name():
            raise Refused('%s %s is current; it is never removed or rebuilt '
                          'in place' % (self.kind, name))
        fsutil.remove_tree(self.path(name))
        self.journal.append('pruned', name=name, reason=reason)

    def recover(self):
        """Mark what killed runs left behind (call under the lock)."""
        fsutil.empty_trash(self.directory)
        # a flip killed between symlink and rename leaves its new link
        parent, base = os.path.split(self.current)
        try:
            leftovers = [n for n in os.listdir(parent)
                         if n.startswith('.%s.' % base) and n.endswith('.tmp')]
        except OSError:
            leftovers = []
        for name in leftovers:
            if os.path.islink(os.path.join(parent, name)):
                os.unlink(os.path.join(parent, name))
        states = self.states()
        for name in self.on_disk():
            if self.is_complete(name):
                continue
            failed = os.path.join(self.path(name), FAILED)
            if not os.path.exists(failed):
                reason = 'the run building it was killed'
                fsutil.atomic_write(failed, reason + '\n')
                if states.get(name) != FAILED_STATE:
                    self.journal.append('failed', name=name, reason=reason)

    # -- reading the history ----------------------------------------------

    def on_disk(self):
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if NAME.match(n)
                      and os.path.isdir(os.path.join(self.directory, n)))

    def states(self):
        state = {}
        for entry in self.journal.entries():
            name, event = entry.get('name'), entry['event']
            if event == 'started':
                state[name] = BUILDING
            elif event == 'failed':
                state[name] = FAILED_STATE
            elif event == 'built':
                state[name] = BUILT
            elif event == 'published':
                state[name] = PUBLISHED
            elif event == 'rolled-back':
                state[name] = ROLLED_BACK
            elif event == 'bad':
                state[name] = BAD
            elif event == 'pruned':
                state[name] = PRUNED
        return state

    def order(self):
        """Names in the order they were first built (from the journal)."""
        seen = []
        for entry in self.journal.entries():
            if entry['event'] == 'built' and entry.get('name') not in seen:
                seen.append(entry['name'])
            elif (entry['event'] == 'built' and entry.get('name') in seen):
                # rebuilt: it moves to its new place in the order
                seen.remove(entry['name'])
                seen.append(entry['name'])
        return seen

    def started_order(self):
        """Names in the order their last build started."""
        names = []
        for entry in self.journal.entries():
            if entry['event'] == 'started':
                if entry.get('name') in names:
                    names.remove(entry['name'])
                names.append(entry.get('name'))
        return names

    def history(self):
        """One dict per generation on disk or in the journal, oldest first."""
        states = self.states()
        current = self.current_name()
        built_at = {}
        for entry in self.journal.entries():
            if entry['event'] == 'built':
                built_at[entry['name']] = entry['time']
        # in the order their (last) build started, failed ones included
        names = [n for n in self.started_order() if n]
        names += [n for n in self.order() if n not in names]
        names += [n for n in self.on_disk() if n not in names]
        rows = []
        for name in names:
            state = states.get(name, BUILT if self.is_complete(name)
                               else FAILED_STATE)
            if state == PRUNED and self.exists(name):
                continue
            rows.append(dict(
                name=name, state=state, built=built_at.get(name),
                current=(name == current), exists=self.exists(name)))
        return rows

    def good(self):
        """Complete generations in a good state, oldest first."""
        return [r['name'] for r in self.history()
                if r['state'] in GOOD and r['exists']
                and self.is_complete(r['name'])]

    def previous_good(self, before=None):
        """The newest good generation built before ``before`` (default:
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
        validate_name(name, self.what)
        state = self.states().get(name)
        if not self.exists(name):
            if state == PRUNED:
                raise NotFound('%s %s was pruned; rebuild it with '
                               'bin/buildout safedeploy:tag=%s' % (
                                   self.kind, name, name))
            raise NotFound('no %s %s in %s; bin/rollback --list shows the '
                           'ones there are' % (self.kind, name, self.directory))
        if not self.is_complete(name) or state in (FAILED_STATE, BUILDING):
            raise Refused('%s %s did not build completely; it cannot become '
                          'current (bin/rollback --list shows the good ones)'
                          % (self.kind, name))
        if state == BAD:
            raise Refused('%s %s is marked bad (it failed its health check); '
                          'choose another one' % (self.kind, name))
        return name

    # -- pruning ----------------------------------------------------------

    def prune(self, keep, protect=()):
        """Remove complete generations beyond the newest ``keep`` (never
        the current one, the previous good one, the newest good one, nor
        anything in ``protect``) and failed ones but the newest."""
        current = self.current_name()
        good = self.good()
        protected = set(protect) | {current, self.previous_good(current)}
        if good:
            protected.add(good[-1])
        complete = [r['name'] for r in self.history()
                    if r['exists'] and self.is_complete(r['name'])]
        removed = []
        excess = complete[:-keep] if keep > 0 else complete
        for name in excess:
            if name not in protected:
                self.discard(name, 'more than keep=%d' % keep)
                removed.append(name)
        started = self.started_order()
        failed = [n for n in self.on_disk() if not self.is_complete(n)]
        failed.sort(key=lambda n: started.index(n) if n in started else -1)
        for name in failed[:-1]:
            if name not in protected:
                self.discard(name, 'failed build')
                removed.append(name)
        return removed
