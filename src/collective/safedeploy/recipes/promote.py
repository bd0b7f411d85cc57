"""``recipe = collective.safedeploy:promote``: generates bin/promote.

::

    [promote]
    recipe = collective.safedeploy:promote
    config = ${buildout:directory}/stages.cfg
    directory = ${buildout:directory}/stages

``config``: the stages file (:mod:`collective.safedeploy.promote.stages`,
default ``stages.cfg`` in the buildout directory), checked when buildout
reads the part; ``directory``: where each stage's journal and lock are
kept (default ``stages``).  bin/promote calls
:func:`collective.safedeploy.promote.command.main`.
"""
import os

from ..core import options as opts
from .base import EGG_OPTIONS
from .base import RootScript


class Promote(RootScript):

    script = 'promote'
    module = 'collective.safedeploy.promote.command'
    schema = opts.Schema([
        opts.Option('config', '', opts.text),
        opts.Option('directory', '', opts.text),
    ], allowed=EGG_OPTIONS)

    def configure(self):
        o = self.options
        self.schema.parse(o, self.where)
        self.path_option('config', 'stages.cfg')
        self.path_option('directory', 'stages')
        if os.path.exists(o['config']):
            from ..promote import stages
            stages.load(o['config'])
        o.setdefault('eggs', '')

    def eggs(self):
        # the ZEO servers it starts and checks, the copies it catches up
        return ['collective.safedeploy', 'ZODB', 'ZEO']

    def arguments(self):
        return {key: self.options[key] for key in ('config', 'directory')}
