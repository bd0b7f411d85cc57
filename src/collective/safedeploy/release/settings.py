"""The ``[safedeploy]`` options, read and checked once.

:func:`from_buildout` is the only reader of the section: the extension
and every recipe get the same :class:`Settings` object (kept on the
buildout), so each option is validated in one place, with one message,
before anything is staged or written.  Paths are absolute.
"""
import os

from ..core import commands
from ..core import options
from ..core.errors import ConfigurationError
from ..core.store import RELEASE
from ..core.store import Store
from ..core.store import check_apart
from ..core.store import validate_name

SECTION = 'safedeploy'
INDEX_MODES = ('required', 'best-effort', 'off')
# what a release holds besides what the parts write
RESERVED = ('bin', 'parts', 'develop-eggs', 'src', '.installed.cfg')


def _health_check(raw, where):
    value = (raw or '').strip()
    if value.startswith(('http://', 'https://')) or \
            '://' in value.split(' ', 1)[0]:
        return options.url(value, where)
    return value          # a command: split with the buildout directory


def _after_flip(raw, where):
    return (raw or '').strip()


SCHEMA = options.Schema([
    options.Option('tag', '', options.text,
                   'the release name (default: the git tag of the checkout)'),
    options.Option('releases-directory', '${buildout:directory}/releases',
                   options.required()),
    options.Option('current', '${buildout:directory}/current',
                   options.required()),
    options.Option('keep', '5', options.integer(1),
                   'releases to keep'),
    options.Option('shared', '', options.words),
    options.Option('exclude-parts', '', options.words),
    options.Option('update-excluded-parts', '', options.words,
                   'excluded parts a release build updates (on the command '
                   'line: bin/buildout safedeploy:update-excluded-parts=zeo)'),
    options.Option('through-current', '', options.words,
                   'parts whose generated configuration names the release '
                   'through current (besides every collective.recipe.'
                   'supervisor part)'),
    options.Option('after-flip', '', _after_flip),
    options.Option('health-check', '', _health_check),
    options.Option('health-timeout', '30', options.number(0, 86400)),
    options.Option('rebuild', 'false', options.boolean),
    options.Option('snapshot-before-flip', '', options.text),
    options.Option('index', 'required', options.choice(*INDEX_MODES)),
    options.Option('indexes-directory', '${buildout:directory}/indexes',
                   options.required()),
    options.Option('pool-directory', '${buildout:directory}/pool',
                   options.required()),
    options.Option('index-fetch', 'false', options.boolean),
    options.Option('keep-indexes', 'false', options.boolean,
                   'true: a pruned release keeps its package index (for '
                   'bin/index --rebuild); false: it goes with the release'),
    options.Option('flip', 'true', options.boolean,
                   'false: build, verify and publish the release, and leave '
                   'current where it is (bin/flip TAG flips it)'),
    options.Option('allow-dirty', 'false', options.boolean,
                   'build from a checkout with uncommitted changes'),
])


def where(name):
    return '%s:%s' % (SECTION, name)


class Settings:
    """The [safedeploy] options, validated.  Paths are absolute."""

    def __init__(self, buildout_directory, values):
        d = self.buildout_directory = os.path.abspath(buildout_directory)
        o = SCHEMA.parse(dict(values), where)

        def path(name):
            value = o[name].replace('${buildout:directory}', d)
            return os.path.normpath(os.path.join(d, value))

        self.releases_directory = path('releases-directory')
        self.current = path('current')
        self.indexes_directory = path('indexes-directory')
        self.pool_directory = path('pool-directory')
        self.keep = o['keep']
        self.health_timeout = o['health-timeout']
        self.rebuild = o['rebuild']
        # command lines: split now (a bad quote is refused before anything
        # changes), the buildout directory one word even with spaces
        self.after_flip = commands.split(o['after-flip'],
                                         where('after-flip'), protect=(d,))
        self.health_check = o['health-check']
        if self.health_check and not self.health_check.startswith(
                ('http://', 'https://')):
            self.health_check = commands.split(
                self.health_check, where('health-check'), protect=(d,))
        self.snapshot_before_flip = o['snapshot-before-flip']
        self.index = o['index']
        self.index_fetch = o['index-fetch']
        self.keep_indexes = o['keep-indexes']
        self.allow_dirty = o['allow-dirty']
        self.flip = o['flip']
        self.exclude_parts = o['exclude-parts']
        self.through_current = o['through-current']
        self.update_excluded_parts = o['update-excluded-parts']
        stray = [p for p in self.update_excluded_parts
                 if p not in self.exclude_parts]
        if stray:
            raise ConfigurationError(
                'safedeploy:update-excluded-parts names %s, which is not in '
                'exclude-parts; name excluded parts only' % ', '.join(stray))
        self.shared = [self._shared(entry) for entry in o['shared']]
        self.tag = validate_name(o['tag']) if o['tag'] else None
        self._check_layout()

    @staticmethod
    def _shared(entry):
        norm = os.path.normpath(entry)
        if (os.path.isabs(entry) or norm.startswith('..')
                or norm in ('.',) or norm.split(os.sep)[0] in RESERVED):
            raise ConfigurationError(
                'invalid safedeploy:shared entry %r: use a path relative '
                'to the buildout directory, like var or log, not one of '
                '%s' % (entry, ', '.join(RESERVED)))
        return norm

    def _check_layout(self):
        d = self.buildout_directory
        if os.path.realpath(self.releases_directory) == os.path.realpath(d):
            raise ConfigurationError(
                'safedeploy:releases-directory must not be the buildout '
                'directory itself; use e.g. ${buildout:directory}/releases')
        check_apart({'safedeploy:releases-directory':
                     self.releases_directory}, (),
                    {'the buildout directory': d})
        # the link itself, not where it points
        link = os.path.join(os.path.realpath(os.path.dirname(self.current)),
                            os.path.basename(self.current))
        top = os.path.realpath(self.releases_directory)
        if link == top or link.startswith(top + os.sep):
            raise ConfigurationError(
                'safedeploy:current (%s) is inside releases-directory; put '
                'it beside it, e.g. ${buildout:directory}/current'
                % self.current)

    def check_apart(self, data_roots=()):
        """The directories we manage are apart from each other, from the
        data, the shared directories and the buildout directory."""
        d = self.buildout_directory
        others = dict(data_roots)
        others.update(('safedeploy:shared %s' % entry, os.path.join(d, entry))
                      for entry in self.shared)
        check_apart({'safedeploy:releases-directory': self.releases_directory,
                     'safedeploy:indexes-directory': self.indexes_directory,
                     'safedeploy:pool-directory': self.pool_directory},
                    others, {'the buildout directory': d})

    def resolve_tag(self):
        if self.tag is None:
            from .lifecycle import git_tag
            self.tag = validate_name(git_tag(self.buildout_directory,
                                             self.allow_dirty))
        return self.tag

    def hooks(self):
        return {'after-flip': self.after_flip,
                'health-check': self.health_check,
                'health-timeout': self.health_timeout}

    def releases(self):
        return releases(self.releases_directory, self.current)


def releases(directory, current):
    return Store(directory, RELEASE, current=current)


def has_section(buildout, name):
    """Whether the configuration has section ``name``, without reading it
    (``name in buildout`` reads it: its values would be substituted
    before the extension redirected the directories)."""
    return name in buildout.keys()


def section(buildout):
    """The [safedeploy] section's options, or {} when there is none."""
    if not has_section(buildout, SECTION):
        return {}
    return dict(buildout[SECTION])


def from_buildout(buildout):
    """The checked settings of this buildout run (read once, kept)."""
    settings = getattr(buildout, '_safedeploy_settings', None)
    if settings is None:
        settings = Settings(buildout['buildout']['directory'],
                            section(buildout))
        buildout._safedeploy_settings = settings
    return settings
