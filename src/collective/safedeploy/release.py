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
import socket
import subprocess

from . import fsutil
from . import hooks
from .errors import ConfigurationError
from .errors import HealthCheckFailed
from .errors import Refused
from .generations import BAD
from .generations import Generations
from .generations import validate_name
from .journal import now

logger = logging.getLogger('collective.safedeploy')

DEFAULTS = {
    'tag': '',
    'releases-directory': '${buildout:directory}/releases',
    'current': '${buildout:directory}/current',
    'keep': '5',
    'shared': '',
    'exclude-parts': '',
    'after-flip': '',
    'health-check': '',
    'health-timeout': '30',
    'rebuild': 'false',
    'snapshot-before-flip': '',
    'index': 'required',
    'indexes-directory': '${buildout:directory}/indexes',
    'pool-directory': '${buildout:directory}/pool',
    'index-fetch': 'false',
}

# what a release holds besides what the parts write
RESERVED = ('bin', 'parts', 'develop-eggs', 'src', '.installed.cfg')


def git_tag(directory):
    """The tag the buildout directory's checkout is exactly at."""
    try:
        p = subprocess.run(
            ['git', 'describe', '--tags', '--exact-match'], cwd=directory,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError:
        p = None
    if p is None or p.returncode:
        raise ConfigurationError(
            'no tag to release: %s is not at a git tag; tag it (git tag 1.0)'
            ' or give one: bin/buildout safedeploy:tag=1.0' % directory)
    return p.stdout.strip()


def _boolean(name, value):
    v = value.strip().lower()
    if v in ('true', 'yes', 'on', '1'):
        return True
    if v in ('false', 'no', 'off', '0', ''):
        return False
    raise ConfigurationError(
        'invalid value for safedeploy:%s: %r; use true or false' % (
            name, value))


def _number(name, value, minimum, kind=int):
    try:
        n = kind(value)
    except (TypeError, ValueError):
        n = None
    if n is None or n < minimum:
        raise ConfigurationError(
            'invalid value for safedeploy:%s: %r; use a number of at least '
            '%s' % (name, value, minimum))
    return n


class Settings:
    """The [safedeploy] options, validated.  Paths are absolute."""

    def __init__(self, buildout_directory, options):
        d = os.path.abspath(buildout_directory)
        self.buildout_directory = d
        o = dict(DEFAULTS)
        o.update({k: v for k, v in options.items()})

        def path(name):
            value = o[name].replace('${buildout:directory}', d).strip()
            if not value:
                raise ConfigurationError(
                    'safedeploy:%s is empty; give a directory or leave the '
                    'option out for its default' % name)
            return os.path.normpath(os.path.join(d, value))

        self.releases_directory = path('releases-directory')
        self.current = path('current')
        if os.path.realpath(self.releases_directory) == os.path.realpath(d):
            raise ConfigurationError(
                'safedeploy:releases-directory must not be the buildout '
                'directory itself; use e.g. ${buildout:directory}/releases')
        # the link itself, not where it points
        link = os.path.join(os.path.realpath(os.path.dirname(self.current)),
                            os.path.basename(self.current))
        top = os.path.realpath(self.releases_directory)
        if link == top or link.startswith(top + os.sep):
            raise ConfigurationError(
                'safedeploy:current (%s) is inside releases-directory; put '
                'it beside it, e.g. ${buildout:directory}/current'
                % self.current)
        self.keep = _number('keep', o['keep'], 1)
        self.health_timeout = _number('health-timeout', o['health-timeout'],
                                      0, float)
        self.rebuild = _boolean('rebuild', o['rebuild'])
        self.after_flip = o['after-flip'].strip()
        self.health_check = o['health-check'].strip()
        self.snapshot_before_flip = o['snapshot-before-flip'].strip()
        self.index = o['index'].strip() or 'required'
        if self.index not in ('required', 'best-effort', 'off'):
            raise ConfigurationError(
                'invalid value for safedeploy:index: %r; use required, '
                'best-effort or off' % self.index)
        self.exclude_parts = o['exclude-parts'].split()
        self.shared = []
        for entry in o['shared'].split():
            norm = os.path.normpath(entry)
            if (os.path.isabs(entry) or norm.startswith('..')
                    or norm in ('.',) or norm.split(os.sep)[0] in RESERVED):
                raise ConfigurationError(
                    'invalid safedeploy:shared entry %r: use a path relative '
                    'to the buildout directory, like var or log, not one of '
                    '%s' % (entry, ', '.join(RESERVED)))
            self.shared.append(norm)
        tag = o['tag'].strip()
        self.tag = validate_name(tag) if tag else None

    def resolve_tag(self):
        if self.tag is None:
            self.tag = validate_name(git_tag(self.buildout_directory))
        return self.tag

    def hooks(self):
        return {'after-flip': self.after_flip,
                'health-check': self.health_check,
                'health-timeout': self.health_timeout}


def releases(settings):
    return Generations(settings.releases_directory, settings.current,
                       kind='release', what='tag')


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

def stage(settings):
    """Create releases/<tag> for a new build (the caller holds the lock).

    A tag that already has a complete release is not built again unless
    ``rebuild`` is set, and the current one never is.
    """
    gens = releases(settings)
    tag = settings.tag
    current = gens.current_name()
    gens.recover()
    if gens.is_complete(tag):
        if not settings.rebuild:
            raise Refused(
                'release %s already exists and releases are immutable; tag a '
                'new release, or rebuild it with safedeploy:rebuild=true'
                % tag)
        if tag == current:
            raise Refused(
                'release %s is current and is never rebuilt in place; roll '
                'back to another release first, then rebuild it' % tag)
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
    """Copy each develop source into the release; return the new paths.

    An old release keeps running its own code after the working copy
    moves on.
    """
    import shutil
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
        frozen.append(dest)
    return frozen


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


def publish(settings, manifest):
    """Write the manifest: the release is complete from here on."""
    manifest = releases(settings).complete(settings.tag, manifest)
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

def flip(gens, tag, hook_settings, buildout_directory, event='published',
         **fields):
    """Point ``current`` at ``tag``, run after-flip, pass the health gate.

    When the gate fails, ``current`` goes back where it was, after-flip
    runs again, the release is marked bad and HealthCheckFailed raised.
    """
    previous = gens.flip(tag, event=event, **fields)
    logger.info('flip: current -> %s (was %s)', tag, previous or 'nothing')
    release = gens.path(tag)
    reason = hooks.after_flip(hook_settings.get('after-flip'),
                              buildout_directory, tag, release, previous)
    if reason is None:
        reason = hooks.health_check(
            hook_settings.get('health-check'),
            hook_settings.get('health-timeout', 30), buildout_directory,
            tag, release, previous)
    if reason is None:
        return previous
    # unhealthy: back to where we were
    logger.error('%s', reason)
    gens.journal.append(BAD, name=tag, reason=reason)
    if previous:
        gens.flip(previous, event='published', reason='flipped back')
        hooks.after_flip(hook_settings.get('after-flip'),
                         buildout_directory, previous, gens.path(previous),
                         tag)
        where = 'current flipped back to %s' % previous
    else:
        os.unlink(gens.current)
        fsutil.fsync_directory(os.path.dirname(gens.current))
        where = 'there was no release before it, current removed'
    raise HealthCheckFailed('release %s is bad: %s; %s' % (tag, reason, where))


# -- finish ----------------------------------------------------------------

def finish(settings):
    removed = releases(settings).prune(settings.keep)
    for name in removed:
        logger.info('finish: pruned release %s', name)
    return removed


# -- roll back --------------------------------------------------------------

def roll_back(gens, target=None, dry_run=False, buildout_directory=None):
    """Flip ``current`` to ``target`` (default: the previous good release).

    The caller holds the lock.  Returns (from, to).
    """
    current = gens.current_name()
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
        raise Refused('release %s is already current; nothing to do'
                      % target)
    if dry_run:
        return current, target
    manifest = gens.manifest(target) or {}
    hook_settings = manifest.get('hooks', {})
    directory = buildout_directory or manifest.get('buildout-directory') or \
        os.path.dirname(gens.current)
    if current:
        gens.journal.append('rolled-back', name=current, to=target)
    flip(gens, target, hook_settings, directory, event='published',
         via='rollback')
    return current, target
