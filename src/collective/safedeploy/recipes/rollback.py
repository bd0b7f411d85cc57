"""``recipe = collective.safedeploy:rollback``: generates bin/rollback and
bin/flip (a release built with ``safedeploy:flip = false`` made current,
with the same lock, hooks and health gate).

Options (all optional):

releases-directory
    default: ``${safedeploy:releases-directory}``
    (``${buildout:directory}/releases``)
current
    default: ``${safedeploy:current}`` (``${buildout:directory}/current``)
snapshot
    default: ``${safedeploy:snapshot-before-flip}``.  The snapshot part
    whose snapshots ``bin/rollback TAG --with-data`` restores.
evolve-copy
    default: empty.  The evolve-copy part: rolling back to a release that
    ran on an older data generation switches the data back too (refusing
    to discard writes made since unless ``--discard-writes``).
"""

from ..core import options as opts
from ..core.errors import ConfigurationError
from ..release.settings import has_section
from .base import EGG_OPTIONS
from .base import RootScript


class Rollback(RootScript):

    script = 'rollback'
    module = 'collective.safedeploy.release.rollback'
    schema = opts.Schema([
        opts.Option('releases-directory', '', opts.text),
        opts.Option('current', '', opts.text),
        opts.Option('snapshot', '', opts.text),
        opts.Option('evolve-copy', '', opts.text),
    ], allowed=EGG_OPTIONS)

    def configure(self):
        o = self.options
        settings = self.settings()
        self.path_option('releases-directory', settings.releases_directory)
        self.path_option('current', settings.current)
        o.setdefault('snapshot', settings.snapshot_before_flip)
        o.setdefault('evolve-copy', '')
        self.parts = {}
        for option in ('snapshot', 'evolve-copy'):
            part = o[option].strip()
            if not part:
                continue
            if not has_section(self.buildout, part):
                raise ConfigurationError(
                    '%s = %s is not a section; give the name of your %s '
                    'part' % (self.where(option), part, option))
            recipe = self.buildout._raw[part].get('recipe')
            if recipe != 'collective.safedeploy:%s' % option:
                raise ConfigurationError(
                    '%s = %s names a part whose recipe is %s, not '
                    'collective.safedeploy:%s' % (self.where(option), part,
                                                  recipe, option))
            self.parts[option] = part

    def part_options(self, option):
        """The options of the snapshot or evolve-copy part, as its script
        gets them (what bin/rollback calls in-process)."""
        part = self.parts.get(option)
        if not part:
            return None
        # the recipe of that part fills in its defaults when it is read
        section = self.buildout[part]
        from .evolve import EvolveCopy
        from .snapshot import Snapshot
        kind = Snapshot if option == 'snapshot' else EvolveCopy
        return kind(self.buildout, part, section).arguments()

    def eggs(self):
        needed = ['collective.safedeploy']
        if self.parts:
            needed.append('ZODB')       # the data step runs in-process
        if self.parts.get('evolve-copy') and \
                self.buildout[self.parts['evolve-copy']].get('zeo-address'):
            needed.append('ZEO')
        if any(self.buildout[part].get('storage') == 'relstorage'
               for part in self.parts.values()):
            needed += ['RelStorage', 'psycopg2-binary']
        return needed

    def arguments(self):
        o = self.options
        return dict(releases_directory=o['releases-directory'],
                    current=o['current'],
                    buildout_directory=self.directory,
                    snapshot=self.part_options('snapshot'),
                    evolve_copy=self.part_options('evolve-copy'))

    def scripts(self):
        arguments = self.arguments()
        flip = dict(arguments, snapshot_before_flip=bool(
            self.settings().snapshot_before_flip and arguments['snapshot']))
        flip.pop('evolve_copy')
        return [('rollback', self.module, 'main', arguments),
                ('flip', self.module, 'flip_main', flip)]
