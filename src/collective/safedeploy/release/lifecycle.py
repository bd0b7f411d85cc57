"""The release lifecycle, as named steps.

::

    stage    lock the releases directory, finish what killed runs left,
             create releases/<tag> (not yet complete)
    build    bin/buildout installs the parts into it     (extension.py)
    verify   every configured part was installed
    publish  write the manifest: the release is complete and immutable
    flip     point `current` at it; after-flip; health gate
             (unhealthy: flip back, mark it bad)
    finish   prune releases beyond `keep`
    roll back  flip `current` to an older good release, same gate

Nothing outside ``releases/<tag>`` changes before *flip*, and *flip* is
one ``rename`` of a freshly made symlink.  A run that fails or is killed
before it leaves ``current`` where it was.
"""
import getpass
import hashlib
import json
import logging
import os
import shutil
import socket

from . import excluded
from . import hooks
from ..core import cli
from ..core import commands
from ..core import fsutil
from ..core.errors import ConfigurationError
from ..core.errors import HealthCheckFailed
from ..core.errors import Refused
from ..core.journal import now
from ..core.store import GOOD
from ..core.store import UNCHECKED

logger = logging.getLogger('collective.safedeploy')


def git_tag(directory, allow_dirty=False):
    """The one tag the buildout directory's checkout is at."""
    p = commands.run(['git', 'tag', '--points-at', 'HEAD'], cwd=directory,
                     check=False)
    tags = p.stdout.split() if p.returncode == 0 else []
    if not tags:
        raise ConfigurationError(
            'no tag to release: %s is not at a git tag; tag it (git tag 1.0)'
            ' or give one: bin/buildout safedeploy:tag=1.0' % directory)
    if len(tags) > 1:
        raise ConfigurationError(
            'the checkout in %s is at %d tags (%s); give the one to release: '
            'bin/buildout safedeploy:tag=%s' % (
                directory, len(tags), ', '.join(sorted(tags)),
                sorted(tags)[-1]))
    if not allow_dirty:
        p = commands.run(['git', 'status', '--porcelain',
                          '--untracked-files=no'], cwd=directory)
        changed = [line[3:] for line in p.stdout.splitlines() if line.strip()]
        if changed:
            raise ConfigurationError(
                'the checkout in %s has uncommitted changes to %s: release '
                '%s would not be what the tag says; commit or stash them (or '
                'set safedeploy:allow-dirty = true)' % (
                    directory, ', '.join(changed[:3]) +
                    (' ...' if len(changed) > 3 else ''), tags[0]))
    return tags[0]


def check_writable(settings):
    """Refuse early, before anything changed, what we could not finish."""
    for directory in (settings.buildout_directory,
                      os.path.dirname(settings.current)):
        if os.path.isdir(directory) and not os.access(directory, os.W_OK):
            raise ConfigurationError(
                '%s is not writable by %s; run as the site user or fix its '
                'permissions' % (directory, getpass.getuser()))
    d = settings.releases_directory
    if os.path.exists(d) and not os.path.isdir(d):
        raise ConfigurationError(
            'releases-directory %s exists and is not a directory; move it '
            'away or set safedeploy:releases-directory' % d)
    if os.path.isdir(d) and not os.access(d, os.W_OK):
        raise ConfigurationError(
            'releases-directory %s is not writable by %s; fix its '
            'permissions' % (d, getpass.getuser()))


# -- stage -----------------------------------------------------------------

def check_stage(settings):
    """Refuse a tag that cannot be built (read-only: called before the
    lock is taken, and again under it)."""
    gens = settings.releases()
    tag = settings.tag
    entry = gens.entry(tag)
    current = gens.current_name()
    if entry == 'damaged':
        raise Refused('release %s in %s is damaged; remove it by hand or '
                      'tag a new release' % (tag, gens.directory))
    if entry != 'complete':
        return
    if tag == current:
        if settings.rebuild:
            raise Refused(
                'release %s is current and is never rebuilt in place; roll '
                'back to another release first, then rebuild it' % tag)
        return           # nothing_to_do
    if nothing_to_do(settings):
        return
    if not settings.rebuild:
        raise Refused(
            'release %s already exists and releases are immutable; tag a '
            'new release, or rebuild it with safedeploy:rebuild=true' % tag)


def nothing_to_do(settings):
    """A re-run (cron, -N, Ansible) has nothing to build: the tag is the
    current release, complete -- or, with ``flip = false``, a complete
    release in a good state (built, not flipped)."""
    gens = settings.releases()
    tag = settings.tag
    if settings.rebuild or gens.entry(tag) != 'complete':
        return False
    if gens.current_name() == tag:
        return True
    return not settings.flip and gens.states().get(tag) in GOOD


def stage(settings):
    """Create releases/<tag> for a new build (the caller holds the lock).

    A tag that already has a complete release is not built again unless
    ``rebuild`` is set, and the current one never is.
    """
    gens = settings.releases()
    tag = settings.tag
    current = gens.current_name()
    for name in gens.recover():
        logger.warning('stage: release %s was left half-built by a killed '
                       'run; marked failed', name)
    check_stage(settings)
    if gens.entry(tag) == 'complete':
        gens.discard(tag, 'rebuild')
    path = gens.stage(tag, previous=current)
    for entry in settings.shared:
        target = os.path.join(settings.buildout_directory, entry)
        os.makedirs(target, exist_ok=True)
        link = os.path.join(path, entry)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.relpath(target, os.path.dirname(link)), link)
    logger.info('stage: building release %s in %s', tag, path)
    return path


def freeze_sources(develop, release_path, buildout_directory):
    """Copy each develop source into the release; return, for each, what
    was frozen: ``source``, ``frozen`` (its copy) and, for a git checkout
    (mr.developer's), the ``revision`` it was at and whether tracked
    files were ``modified`` since.

    An old release keeps running its own code after the working copy
    moves on.
    """
    frozen = []
    src = os.path.join(release_path, 'src')
    for n, entry in enumerate(develop):
        source = os.path.normpath(os.path.join(buildout_directory, entry))
        name = os.path.basename(source.rstrip(os.sep)) or 'src%d' % n
        dest = os.path.join(src, name)
        if os.path.exists(dest):
            dest = os.path.join(src, '%s-%d' % (name, n))
        shutil.copytree(source, dest, symlinks=True, ignore=(
            shutil.ignore_patterns('.git', '.hg', '*.egg-info', 'build',
                                   '__pycache__', '*.pyc', '.tox', '.venv')))
        entry = {'source': source, 'frozen': dest}
        entry.update(source_revision(source))
        frozen.append(entry)
    return frozen


def source_revision(source):
    """{'revision': commit, 'modified': bool} of a source that is the top
    of a git checkout; {} for any other."""
    if not os.path.exists(os.path.join(source, '.git')):
        return {}
    head = commands.run(['git', 'rev-parse', 'HEAD'], cwd=source,
                        check=False)
    if head.returncode:
        return {}
    status = commands.run(['git', 'status', '--porcelain',
                           '--untracked-files=no'], cwd=source, check=False)
    return {'revision': head.stdout.strip(),
            'modified': bool(status.returncode or status.stdout.strip())}


# -- verify ----------------------------------------------------------------

def installed_parts(installed_file):
    import configparser
    parser = configparser.RawConfigParser(interpolation=None)
    parser.optionxform = str
    try:
        parser.read(installed_file)
        return parser.get('buildout', 'parts').split()
    except (configparser.Error, OSError):
        return []


def verify(settings, release_path, configured_parts):
    """Every configured part was installed into the release."""
    installed = installed_parts(os.path.join(release_path, '.installed.cfg'))
    missing = [p for p in configured_parts if p not in installed]
    if missing:
        raise Refused(
            'release %s is incomplete: part(s) %s not installed (was this '
            '"bin/buildout install PART"?); run bin/buildout without part '
            'names to build a whole release' % (
                settings.tag, ', '.join(missing)))
    return installed


# -- publish ---------------------------------------------------------------

def configuration_hash(raw):
    """sha256 of the effective configuration (every section, every option,
    after extends and command-line overrides)."""
    canonical = json.dumps(
        {s: {k: str(v) for k, v in sorted(opts.items())}
         for s, opts in sorted(raw.items())}, sort_keys=True)
    return hashlib.sha256(canonical.encode('utf-8')).hexdigest()


def describe(settings, release_path, configuration, distributions, parts,
             extra=None):
    """The release's manifest (not yet written) and its effective.cfg."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    manifest = {
        'tag': settings.tag,
        'time': now(),
        'user': user,
        'host': socket.gethostname(),
        'configuration-sha256': configuration_hash(configuration),
        'parts': parts,
        'distributions': distributions,
        'hooks': settings.hooks(),
        'buildout-directory': settings.buildout_directory,
    }
    manifest.update(extra or {})
    fsutil.atomic_write(os.path.join(release_path, 'effective.cfg'),
                        dump_configuration(configuration))
    return manifest


def write_annotated(release_path, buildout, tag):
    """``releases/<tag>/annotate.txt``: ``bin/buildout annotate`` for what
    the release was built with.  Buildout 6 loads no extension for
    ``annotate``, so the command shows the configuration as written
    (``bin-directory = bin``); this file is the same listing with every
    value the build set or changed -- the release's directories, the
    frozen ``develop``, options a recipe or the extension gave a part --
    as it was used, its source ``release <tag> build``.  Values with
    substitutions are listed as written."""
    import contextlib
    import copy
    import io
    from zc.buildout.buildout import SectionKey, _print_annotate
    source = 'release %s build' % tag
    data = copy.deepcopy(buildout._annotated)
    for name, options in sorted(buildout._data.items()):
        section = data.setdefault(name, {})
        for key, value in sorted(options._data.items()):
            value = str(value)
            known = section.get(key)
            if known is None:
                section[key] = SectionKey(value, source)
            elif '${' not in known.value and known.value != value:
                known.value = value
                known.addToHistory('OVERRIDE', value, source)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _print_annotate(data, False, [], buildout._buildout_dir)
    fsutil.atomic_write(os.path.join(release_path, 'annotate.txt'),
                        out.getvalue().lstrip('\n'))


def publish(settings, manifest):
    """Write the manifest: the release is complete from here on."""
    manifest = settings.releases().complete(settings.tag, manifest)
    logger.info('publish: release %s is complete', settings.tag)
    return manifest


def dump_configuration(raw):
    lines = ['# The effective configuration this release was built from.\n']
    for section in sorted(raw):
        lines.append('\n[%s]\n' % section)
        for key in sorted(raw[section]):
            value = str(raw[section][key]).replace('\n', '\n    ')
            lines.append('%s = %s\n' % (key, value))
    return ''.join(lines)


# -- flip ------------------------------------------------------------------

def flip(gens, tag, hook_settings, buildout_directory, via='publish',
         **fields):
    """Point ``current`` at ``tag``, install its root scripts, run
    after-flip, pass the health gate (:func:`check`).  Until the gate
    passed, the journal has ``tag`` as unchecked: a run killed in between
    leaves it so, and the next run checks it again
    (:func:`check_again`)."""
    previous = gens.flip(tag, via=via, checking=True, **fields)
    if via != 'publish' and previous:
        excluded.restore_leaving(gens, previous, tag)
    install_root_scripts(gens, tag)
    # the result is said once, when the gate passed: "current -> TAG" by
    # bin/buildout, "rolled back: ..." by bin/rollback, "flipped: ..." by
    # bin/flip (the after-flip and health check lines follow the flip)
    logger.debug('flip: current -> %s (was %s)', tag, previous or 'nothing')
    check(gens, tag, previous, hook_settings, buildout_directory)
    return previous


def check(gens, tag, previous, hook_settings, buildout_directory):
    """After-flip and the health gate of ``tag``, just made current.

    When the gate fails, ``current`` goes back to ``previous`` (with the
    root scripts of that release), after-flip runs again, the release is
    marked bad and HealthCheckFailed raised.  An interrupt before the gate
    passed goes back the same way (the release is not marked bad: it was
    not found unhealthy) and is raised again.
    """
    try:
        reason = gate(gens, tag, previous, hook_settings, buildout_directory)
    except BaseException as e:
        if isinstance(e, Exception):
            raise
        restore = cli.ignore_signals()
        try:
            e.safedeploy_where = flip_back(gens, tag, previous,
                                           hook_settings, buildout_directory,
                                           'interrupted')
        finally:
            try:
                restore()
            except BaseException:
                pass     # the interrupt being handled is raised below
        raise
    if reason is None:
        gens.checked(tag)
        return
    logger.error('%s', reason)
    gens.journal.append('bad', name=tag, reason=reason)
    restore = cli.ignore_signals()
    try:
        where = flip_back(gens, tag, previous, hook_settings,
                          buildout_directory, 'unhealthy')
    finally:
        restore()
    raise HealthCheckFailed('release %s is bad: %s; %s' % (tag, reason, where))


def unchecked(gens):
    """The current release, when the run that flipped to it was killed
    before its health gate passed; else None."""
    tag = gens.current_name()
    if tag and gens.states(strict=False).get(tag) == UNCHECKED:
        return tag
    return None


def check_again(gens, tag, hook_settings, buildout_directory):
    """The gate a killed run did not finish: after-flip and the health
    check of the current release ``tag`` again, as :func:`check` (failing,
    ``current`` goes back to the release that was current before it).
    The caller holds the lock."""
    previous = gens.flipped_from(tag)
    logger.warning('release %s is current, but its health gate never '
                   'passed (the run that flipped to it was killed): running '
                   'after-flip and the health check again', tag)
    check(gens, tag, previous, hook_settings, buildout_directory)


def gate(gens, tag, previous, hook_settings, buildout_directory):
    """after-flip, then the health check: None, or why it failed."""
    release = gens.path(tag)
    reason = hooks.after_flip(hook_settings.get('after-flip'),
                              buildout_directory, tag, release, previous)
    if reason is None:
        reason = hooks.health_check(
            hook_settings.get('health-check'),
            hook_settings.get('health-timeout', 30), buildout_directory,
            tag, release, previous)
    return reason


def flip_back(gens, tag, previous, hook_settings, buildout_directory, why):
    """``current`` back to ``previous`` after ``tag`` was flipped to;
    returns the words saying where it points now."""
    if previous:
        gens.flip(previous, via='flip-back', reason=why, left=tag)
        excluded.restore_leaving(gens, tag, previous)
        install_root_scripts(gens, previous)
        if why == 'interrupted':
            gens.journal.append('rolled-back', name=tag, to=previous,
                                reason=why)
        previous_hooks = (gens.manifest(previous) or {}).get(
            'hooks', hook_settings)
        hooks.after_flip(previous_hooks.get('after-flip'),
                         buildout_directory, previous, gens.path(previous),
                         tag)
        return 'current flipped back to %s' % previous
    gens.remove_current()
    return 'there was no release before it, current removed'


def install_root_scripts(gens, tag):
    """The scripts that live in the buildout's own bin directory
    (bin/rollback, bin/snapshot, ...) are those of the current release:
    copied from its bin directory whenever it becomes current."""
    manifest = gens.manifest(tag) or {}
    root = manifest.get('root-bin-directory')
    names = manifest.get('root-scripts') or ()
    if root:
        remove_stale_root_scripts(gens, tag, root, names)
    if not root or not names:
        return []
    os.makedirs(root, exist_ok=True)
    installed = []
    for name in names:
        source = os.path.join(gens.path(tag), 'bin', name)
        if os.path.exists(source):
            fsutil.atomic_copy(source, os.path.join(root, name))
            installed.append(name)
    return installed


# the root scripts that need nothing from a release: never removed
SELF_CONTAINED = ('rollback', 'flip')


def remove_stale_root_scripts(gens, tag, root, names):
    """A root script another release installed that ``tag`` does not have
    would go on running that release's code (bin/evolve-copy with a newer
    release's evolve steps): it is removed -- only when it is still
    exactly a copy of that release's script (never a file of the
    operator's), and never bin/rollback or bin/flip."""
    removed = []
    for other in gens.on_disk(strict=False):
        if other == tag or gens.entry(other) != 'complete':
            continue
        try:
            theirs = gens.manifest(other) or {}
        except Exception:
            continue
        if theirs.get('root-bin-directory') != root:
            continue
        for name in theirs.get('root-scripts') or ():
            if name in names or name in SELF_CONTAINED or name in removed:
                continue
            path = os.path.join(root, name)
            source = os.path.join(gens.path(other), 'bin', name)
            if os.path.isfile(path) and os.path.isfile(source) and \
                    _same_content(path, source):
                os.unlink(path)
                removed.append(name)
                logger.info('removed %s: release %s has no such script',
                            path, tag)
    return removed


def _same_content(a, b):
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        return fa.read() == fb.read()


# -- finish ----------------------------------------------------------------

def finish(settings):
    """Prune: failed and bad releases count toward ``keep`` and go
    first; the package index of a pruned release goes with it, and the
    pool files no kept index links any more."""
    removed = settings.releases().prune(settings.keep)
    for name in removed:
        logger.info('finish: pruned release %s', name)
    if removed and settings.index != 'off':
        prune_indexes(settings, removed, settings.keep_indexes)
    return removed


def prune_indexes(settings, removed, keep_index=False):
    from ..index import pool
    from ..index import records
    indexes_dir = settings.indexes_directory
    if not os.path.isdir(indexes_dir):
        return
    pruned = [name for name in removed
              if records.prune(name, indexes_dir, keep_index=keep_index)]
    for name in pruned:
        logger.info('finish: pruned the package index of %s', name)
    if pruned and records.tags(indexes_dir):
        files = pool.gc(indexes_dir, settings.pool_directory)
        if files:
            logger.info('finish: removed %d pool file(s) no kept index '
                        'uses', len(files))


# -- roll back --------------------------------------------------------------

def roll_back(gens, target=None, dry_run=False, buildout_directory=None,
              via='rollback'):
    """Flip ``current`` to ``target`` (default: the previous good release).
    ``via='flip'``: going forward to a release built without a flip (the
    one left is not "rolled back").

    The caller holds the lock.  Returns (from, to).
    """
    current = gens.current_name()
    if not dry_run:
        gens.recover()
    if target is None:
        target = gens.previous_good(current)
        if target is None:
            raise Refused(
                'no good release older than %s to roll back to; name one: '
                'bin/rollback TAG (bin/rollback --list shows them)'
                % (current or 'the current one'))
    gens.resolve(target)
    if target == current:
        if unchecked(gens) == target:
            raise Refused(
                'release %s is already current, but its health gate never '
                'passed (the run that flipped to it was killed); bin/buildout'
                ' safedeploy:tag=%s checks it again, bin/rollback goes back'
                % (target, target))
        raise Refused('release %s is already current; nothing to do'
                      % target)
    if dry_run:
        return current, target
    manifest = gens.manifest(target) or {}
    hook_settings = manifest.get('hooks', {})
    directory = buildout_directory or manifest.get('buildout-directory') or \
        os.path.dirname(gens.current)
    if current and via == 'rollback':
        gens.journal.append('rolled-back', name=current, to=target)
    flip(gens, target, hook_settings, directory, via=via)
    return current, target
