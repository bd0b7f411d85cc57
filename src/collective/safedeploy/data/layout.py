"""The data root: a site's data in numbered generations behind a link.

::

    DATA/generations/1/filestorage/Data.fs      (the files keep their
    DATA/generations/1/blobstorage/...           relative paths)
    DATA/generations/2/...
    DATA/current -> generations/2

The site's configuration points through the link
(``DATA/current/filestorage/Data.fs``).  A generation that is not current
is never modified; replacing the current one is an atomic flip of the
link, exactly like releases (one :class:`~collective.safedeploy.core.
store.Store` type does both).

What a generation holds is configured by ``files``, one entry a line,
relative to a generation:

- ``filestorage/Data.fs blobstorage`` -- a FileStorage and its blob
  directory: Data.fs is copied up to its last committed transaction,
  blobs are hard-linked, and the copy is verified;
- ``filestorage/Data.fs`` -- a FileStorage without blobs;
- any other path -- a file or directory copied as it is.
"""
import logging
import os

import zc.lockfile

from . import copy as fscopy
from . import filestorage
from . import verify as fsverify
from .mounts import remove_generation
from ..core import fsutil
from ..core.errors import ConfigurationError
from ..core.errors import NotFound
from ..core.errors import Refused
from ..core.store import DATA_GENERATION
from ..core.store import Store

logger = logging.getLogger('collective.safedeploy')

DEFAULT_FILES = 'filestorage/Data.fs blobstorage'
GENERATIONS = 'generations'
CURRENT = 'current'


class Storage:
    """One configured entry of ``files``."""

    def __init__(self, fs=None, blobs=None, other=None):
        self.fs = fs          # relative path of a Data.fs, or None
        self.blobs = blobs    # relative path of its blob directory
        self.other = other    # relative path of anything else

    @property
    def paths(self):
        return [p for p in (self.fs, self.blobs, self.other) if p]

    def __repr__(self):
        return '<Storage %s>' % ' '.join(self.paths)


def parse_files(text, where='files'):
    """``files`` option text (or a list of lines) -> list of Storage;
    ``where`` names the option in the messages (``[snapshot] files``)."""
    if text is None:
        text = DEFAULT_FILES
    lines = text.splitlines() if isinstance(text, str) else list(text)
    result = []
    for line in lines:
        words = line.split()
        if not words:
            continue
        if len(words) == 1 and 'blob' in words[0] and result and \
                result[-1].fs and not result[-1].blobs:
            # "filestorage/Data.fs" and "blobstorage" on lines of their
            # own: the blobs would be copied as a plain directory
            raise ConfigurationError(
                '%s: %r looks like the blob directory of %s; name them '
                'on one line: "%s %s" (or the other path on a line after '
                'another entry)' % (where, words[0], result[-1].fs,
                                    result[-1].fs, words[0]))
        for w in words:
            if os.path.isabs(w) or '..' in w.split('/') or w in ('.', ''):
                raise ConfigurationError(
                    '%s: %r must be a path relative to a generation '
                    '(e.g. filestorage/Data.fs)' % (where, w))
        if words[0].endswith('.fs'):
            if len(words) > 2:
                raise ConfigurationError(
                    '%s: %r has more than a Data.fs and its blob '
                    'directory; put one entry on each line' % (
                        where, line.strip()))
            result.append(Storage(fs=words[0],
                                  blobs=words[1] if len(words) > 1 else None))
        else:
            result.extend(Storage(other=w) for w in words)
    if not result:
        raise ConfigurationError('%s is empty; name at least the '
                                 'Data.fs, e.g. "%s"' % (where, DEFAULT_FILES))
    return result


def lock_held(fs_path):
    """True when a process holds ``Data.fs.lock`` (a running site)."""
    lock_path = fs_path + '.lock'
    if not os.path.exists(lock_path):
        return False
    try:
        lock = zc.lockfile.LockFile(lock_path)
    except zc.lockfile.LockError:
        return True
    lock.close()
    return False


class DataRoot:
    """``DATA`` with ``generations/`` and ``current``."""

    DEFAULT_KEEP = 3    # data generations kept (keep-generations)

    def __init__(self, path, files=None):
        self.path = os.path.abspath(path)
        self.storages = parse_files(files)
        self.generations = Store(
            os.path.join(self.path, GENERATIONS), DATA_GENERATION,
            current=os.path.join(self.path, CURRENT),
            remove=remove_generation)

    # -- where things are --------------------------------------------------

    def current_name(self):
        return self.generations.current_name()

    def current_path(self):
        name = self.current_name()
        if name is None:
            raise NotFound(
                '%s has no current data generation (no %s link); move the '
                'existing data into it with bin/snapshot --adopt' % (
                    self.path, os.path.join(self.path, CURRENT)))
        return self.generations.path(name)

    def lock(self, what='a snapshot, restore or adopt of this data'):
        return self.generations.lock(what)

    def next_name(self):
        numbers = [0]
        for name in set(self.generations.on_disk()) | set(
                e.get('name') for e in self.generations.journal.entries()
                if e.get('name')):
            if str(name).isdigit():
                numbers.append(int(name))
        return str(max(numbers) + 1)

    def file_storages(self, root):
        """(fs path, blob dir or None) of each FileStorage under ``root``."""
        return [(os.path.join(root, s.fs),
                 os.path.join(root, s.blobs) if s.blobs else None)
                for s in self.storages if s.fs]

    def running(self, root=None):
        """The Data.fs files under ``root`` (default: the current
        generation) a process has open for writing."""
        root = root or self.current_path()
        return [fs for fs, _ in self.file_storages(root) if lock_held(fs)]

    # -- copying a consistent generation -----------------------------------

    def copy_data(self, source, target, hints=(), progress=None,
                  recorded=(), keep_blobs=False, durable=True):
        """Copy the configured files of ``source`` into ``target`` (a new,
        empty directory), consistent while ``source`` is being written;
        verify the copy.  Returns the manifest entries describing it.

        ``hints``: entries of earlier manifests; when one still describes
        a prefix of a source Data.fs, only transactions after it have their
        blobs checked (its blobs were checked when it was taken).

        ``recorded``: when ``source`` is a snapshot's own copy, the entries
        its manifest records: each Data.fs is then exactly the recorded
        prefix, handed over by a hard link when nothing else holds it
        (:func:`~collective.safedeploy.fscopy.take_prefix`), and each
        blob tree is handed over whole
        (:func:`~collective.safedeploy.fscopy.take_blobs`).

        ``keep_blobs``: the copy is such a snapshot: it keeps its own flat
        links to its blob files besides the tree.

        ``durable``: each Data.fs copy is on disk before this returns.  A
        snapshot taken on request leaves that to the kernel's write-back
        (like ``cp``): whatever relies on it later makes it durable first
        (a restore copies or links it into a generation and fsyncs that).
        """
        files = self._copy_files(source, target, recorded, keep_blobs,
                                 durable, progress)
        entries = [self._verify_copy(source, target, s, prefix, hints)
                   for s, prefix in files]
        fsutil.fsync_directory(target)
        return entries

    def _copy_files(self, source, target, recorded, keep_blobs, durable,
                    progress):
        """The copying part of :meth:`copy_data`: returns (storage,
        :class:`~collective.safedeploy.filestorage.Prefix`) pairs.

        Data.fs files first, then blobs: a blob file exists before the
        commit that records it.  So the blobs of a Data.fs are linked once
        its copy's end is known, while its bytes are copied; each copy
        that must be durable goes to disk meanwhile.  Nothing runs on in
        the background once this returns or raises."""
        own = {e.get('fs'): e.get('copy') for e in recorded}
        files, tasks, linked_meanwhile = [], [], set()

        def link_blobs_of(s):
            def start(end):
                tasks.append(fsutil.Background(
                    fscopy.link_blobs, os.path.join(source, s.blobs),
                    os.path.join(target, s.blobs), keep=keep_blobs))
                linked_meanwhile.add(s.blobs)
            return start if s.blobs and not recorded else None

        try:
            for s in self.storages:
                if not s.fs:
                    continue
                src = os.path.join(source, s.fs)
                dst = os.path.join(target, s.fs)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                if own.get(s.fs):
                    prefix = fscopy.take_prefix(
                        src, dst, filestorage.Prefix.from_dict(own[s.fs]),
                        progress, sync=False)
                else:
                    prefix = fscopy.copy_prefix(
                        src, dst, progress, sync=False,
                        on_end=link_blobs_of(s))
                files.append((s, prefix))
                if durable:
                    tasks.append(fsutil.BackgroundSync(dst))
            for s in self.storages:
                if s.blobs and recorded:
                    fscopy.take_blobs(os.path.join(source, s.blobs),
                                        os.path.join(target, s.blobs))
                elif s.blobs and s.blobs not in linked_meanwhile:
                    fscopy.link_blobs(os.path.join(source, s.blobs),
                                        os.path.join(target, s.blobs),
                                        keep=keep_blobs)
                if s.other:
                    self._copy_other(source, target, s.other)
            for task in tasks:
                task.wait()
        except BaseException:
            for task in tasks:
                try:    # done before the caller removes what they wrote
                    task.wait()
                except BaseException:
                    pass
            raise
        return files

    @staticmethod
    def check_other(source, rel):
        """The configured other path ``rel`` is there in ``source``, and is
        not a blob directory (it would be copied as a plain one)."""
        src = os.path.join(source, rel)
        if not os.path.lexists(src):
            raise NotFound('%s does not exist; remove it from the "files" '
                           'option or create it' % src)
        if os.path.isdir(src) and os.path.exists(
                os.path.join(src, fscopy.LAYOUT)):
            raise ConfigurationError(
                'files: %s is a blob directory (it has a %s file); name it '
                'on the line of its Data.fs, e.g. "filestorage/Data.fs %s"'
                % (rel, fscopy.LAYOUT, rel))
        return src

    @classmethod
    def _copy_other(cls, source, target, rel):
        src = cls.check_other(source, rel)
        dst = os.path.join(target, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.isdir(src) and not os.path.islink(src):
            fscopy.copy_tree_clone(src, dst)
        else:
            fscopy.clone_file(src, dst)

    @staticmethod
    def _verify_copy(source, target, s, prefix, hints):
        """Verify one copied Data.fs (and its blobs); its manifest entry."""
        src = os.path.join(source, s.fs)
        hint = fsverify.best_hint(src, s.fs, hints)
        blobs = os.path.join(target, s.blobs) if s.blobs else None
        if blobs:
            fsverify.prepare_blob_dir(blobs)
        checked = fsverify.verify(
            os.path.join(target, s.fs), blobs,
            expected_tid=prefix.last_tid, write_index=True,
            **fsverify.since(hint))
        st = os.stat(os.path.join(target, s.fs))
        own = prefix._replace(inode=st.st_ino, device=st.st_dev)
        return dict(
            fs=s.fs, blobs=s.blobs, source=prefix.as_dict(),
            copy=own.as_dict(), last_tid=filestorage.tid_hex(prefix.last_tid),
            verified_since=filestorage.tid_hex(hint and hint.last_tid),
            checked_transactions=checked['transactions'],
            checked_blobs=checked['blobs'])

    def hints(self, extra=()):
        """Manifest entries that may describe prefixes of current data."""
        result = list(extra)
        name = self.current_name()
        if name is not None:
            manifest = self.generations.manifest(name) or {}
            result.extend(manifest.get('storages', []))
        return result

    def new_generation(self, source=None, flip=False, hints=(),
                       via='copy', recorded=(), make=None,
                       check=None, **info):
        """Make a new complete generation from ``source`` (a directory
        holding the configured files; default: the current generation,
        which may be in use) and, with ``flip``, make it current.
        Call under :meth:`lock`.  Returns its name.

        By default the configured files are copied (:meth:`copy_data`).
        A filesystem that can make the whole directory at once passes
        ``make(path)``, which creates it already holding them, and
        ``check(path)``, which checks them and returns the manifest
        entries."""
        gens = self.generations
        gens.recover()
        self.remove_unfinished_copies()
        source = source or self.current_path()
        name = self.next_name()
        path = gens.stage(name, make=make, source=source, **info)
        try:
            if check is not None:
                entries = check(path)
            else:
                entries = self.copy_data(source, path, self.hints(hints),
                                         recorded=recorded)
        except BaseException as e:
            gens.mark_failed(name, str(e) or e.__class__.__name__)
            raise
        gens.complete(name, dict(info, source=source, storages=entries))
        if flip:
            gens.flip(name, via=via, **info)
        return name

    def remove_unfinished_copies(self):
        """Remove generations a killed or failed copy left incomplete:
        they were never current and hold nothing but copies.  (An
        incomplete adopt holds the site's only data: it is kept.)"""
        gens = self.generations
        for name in gens.on_disk():
            if gens.entry(name) != 'staging':
                continue
            info = gens.staging_info(name)
            if info and 'adopted_from' not in info and 'source' in info:
                gens.discard(name, 'incomplete copy')

    # -- a new site --------------------------------------------------------

    def create_empty(self):
        """A new site: ``generations/1``, empty (its directories only; the
        database server creates an empty Data.fs there), made current.
        Refused when there is data already (generations, or files to adopt
        with bin/snapshot --adopt).  Returns its name."""
        gens = self.generations
        if gens.current_name() is None:
            self.refuse_data_to_adopt()    # before the first write
        with self.lock('the first data generation of %s' % self.path):
            current = gens.current_name()
            if current is not None:
                return current
            if gens.on_disk():
                raise Refused(
                    '%s already has generations but no current link; point '
                    '%s at one of them' % (gens.directory, gens.current))
            self.refuse_data_to_adopt()
            gens.recover()
            name = '1'
            path = gens.stage(name, created='empty')
            for s in self.storages:
                for rel in (os.path.dirname(s.fs) if s.fs else None,
                            s.blobs):
                    if rel:
                        os.makedirs(os.path.join(path, rel), exist_ok=True)
            gens.complete(name, dict(created='empty', storages=[]))
            gens.flip(name, via='create')
            logger.info('data generation %s created (empty) in %s', name,
                        gens.directory)
            return name

    def still_empty(self):
        """The current generation is one :meth:`create_empty` made and
        the site has created none of its files yet (nothing to snapshot)."""
        name = self.current_name()
        if name is None:
            return False
        manifest = self.generations.manifest(name) or {}
        if manifest.get('created') != 'empty':
            return False
        path = self.generations.path(name)
        return not any(os.path.lexists(os.path.join(path, s.fs))
                       for s in self.storages if s.fs)

    def refuse_data_to_adopt(self):
        """Refuse data where the files option says, not adopted into
        generations (before the first data generation is made empty)."""
        existing = [p for p in self.top_level()
                    if os.path.lexists(os.path.join(self.path, p))]
        if existing:
            raise Refused(
                '%s holds %s already; with the site stopped, move it into '
                'the generations: bin/snapshot --adopt (before the first '
                'release: safedeploy-snapshot --adopt --data %s)' % (
                    self.path, existing[0], self.path))

    # -- adopting an existing layout ---------------------------------------

    def top_level(self):
        """The first path components of the configured files."""
        seen = []
        for s in self.storages:
            for p in s.paths:
                top = p.split('/')[0]
                if top not in seen:
                    seen.append(top)
        return seen

    def _refuse_adopt(self):
        current = self.generations.current_name()
        if current is not None:
            raise Refused('%s is already in generations (current is '
                          '%s); nothing to adopt' % (self.path, current))
        for fs, _ in self.file_storages(self.path):
            if lock_held(fs):
                raise Refused(
                    '%s is in use (a process holds %s.lock); stop the '
                    'site, then adopt again' % (fs, fs))

    def _check_storage(self, fs, blobs):
        """Check a Data.fs to adopt and its blobs without writing to them
        (ZODB opens it read-only, without the blob directory, which a
        read-only open would add ``tmp/`` to; the blobs are checked with
        ZODB's record iterator): what :func:`.verify.verify` returns."""
        if blobs is not None and not os.path.isdir(blobs):
            raise NotFound('no blob directory %s to adopt; check the data '
                           'and files options' % blobs)
        pos = filestorage.committed_end(fs)
        checked = fsverify.verify(fs, None, expected_tid=None)
        if checked['last_tid'] != pos.last_tid:
            raise Refused(
                '%s ends with an unfinished transaction; open it once with '
                'the site (it truncates it) and adopt again' % fs)
        if blobs is not None:
            checked['transactions'], checked['blobs'], _ = \
                fsverify.check_blobs(fs, blobs)
        return checked

    def _check_before_adopt(self):
        """{Data.fs: what its check found} for the data where it is."""
        checked = {}
        for s in self.storages:
            if not s.fs:
                continue
            fs = os.path.join(self.path, s.fs)
            if not os.path.exists(fs):
                raise NotFound('no %s to adopt; check the data and files '
                               'options' % fs)
            blobs = os.path.join(self.path, s.blobs) if s.blobs else None
            try:
                checked[s.fs] = self._check_storage(fs, blobs)
            except filestorage.VerificationFailed as e:
                raise Refused('%s; nothing was moved: repair the data (or '
                              'restore it from a backup) and adopt again'
                              % e)
        return checked

    def adopt(self):
        """Move ``DATA/filestorage``, ``DATA/blobstorage`` ... (the
        configured files' top-level paths) into ``generations/1`` and point
        ``current`` at it.  The site must be stopped.  Running it again
        after it was killed finishes the job."""
        gens = self.generations
        self._refuse_adopt()     # before the lock: refused, nothing made
        if not os.path.isdir(gens.path('1')):
            # the data is checked where it is, read-only, before the lock
            # or generation 1 is made: refused, nothing made or moved
            checked_before = self._check_before_adopt()
        with self.lock('an adopt of this data'):
            self._refuse_adopt()
            name = '1'
            path = gens.path(name)
            resuming = os.path.isdir(path) and not gens.is_complete(name)
            tops = self.top_level()
            if not resuming:
                if gens.on_disk():
                    raise Refused(
                        '%s already has generations but no current link; '
                        'point %s at one of them' % (
                            gens.directory, gens.current))
                gens.stage(name, adopted_from=self.path)
            for top in tops:
                src = os.path.join(self.path, top)
                dst = os.path.join(path, top)
                if os.path.lexists(src) and not os.path.lexists(dst):
                    os.rename(src, dst)
                    logger.info('moved %s to %s', src, dst)
            fsutil.fsync_directory(self.path)
            fsutil.fsync_directory(path)
            entries = []
            for s in self.storages:
                if not s.fs:
                    continue
                fs = os.path.join(path, s.fs)
                blobs = os.path.join(path, s.blobs) if s.blobs else None
                if blobs:
                    fsverify.prepare_blob_dir(blobs)
                pos = filestorage.committed_end(fs)
                if resuming:      # moved by the killed run: checked here
                    checked = self._check_storage(fs, blobs)
                else:
                    checked = checked_before[s.fs]
                st = os.stat(fs)
                prefix = filestorage.Prefix(
                    st.st_ino, st.st_dev, pos.end, pos.last_tid,
                    filestorage.first_tid_of(fs, pos.end))
                entries.append(dict(
                    fs=s.fs, blobs=s.blobs, copy=prefix.as_dict(),
                    source=prefix.as_dict(),
                    last_tid=filestorage.tid_hex(pos.last_tid),
                    checked_transactions=checked['transactions'],
                    checked_blobs=checked['blobs']))
            gens.complete(name, dict(adopted_from=self.path,
                                     storages=entries))
            gens.flip(name, via='adopt')
            return name

    # -- what is kept (:mod:`.retention`) --------------------------------

    def protected(self, releases=None, discard_writes=False):
        """{generation: why it is never pruned}
        (:func:`.retention.protected`)."""
        from . import retention
        return retention.protected(self, releases, discard_writes)

    def prune(self, keep=DEFAULT_KEEP, releases=None,
              discard_writes=False, dry_run=False):
        """Keep at most ``keep`` data generations (:func:`.retention.prune`);
        call under :meth:`lock`."""
        from . import retention
        return retention.prune(self, keep, releases, discard_writes,
                               dry_run)

    def listing(self, keep=DEFAULT_KEEP, releases=None, sizes=True):
        """One dict per data generation on disk, and why it is kept
        (:func:`.retention.listing`)."""
        from . import retention
        return retention.listing(self, keep, releases, sizes)


DEFAULT_KEEP_GENERATIONS = DataRoot.DEFAULT_KEEP
