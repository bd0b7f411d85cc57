"""Recipe ``collective.safedeploy:index``: generates ``bin/index``.

::

    [index]
    recipe = collective.safedeploy:index
    # indexes = ${safedeploy:indexes-directory}   (default)
    # pool = ${safedeploy:pool-directory}         (default)
    # buildout = (the buildout command --rebuild runs; default: the one
    #             beside the Python that runs bin/index)
    # script-name = index

All the work is in :func:`collective.safedeploy.index.command.main`.
"""
import os

from ..core import options as opts
from .base import EGG_OPTIONS
from .base import RootScript


class Recipe(RootScript):

    module = 'collective.safedeploy.index.command'
    schema = opts.Schema([
        opts.Option('indexes', '', opts.text),
        opts.Option('pool', '', opts.text),
        opts.Option('buildout', '', opts.text),
        opts.Option('script-name', 'index', opts.text),
    ], allowed=EGG_OPTIONS)

    def configure(self):
        o = self.options
        settings = self.settings()
        o.setdefault('script-name', 'index')
        self.script = o['script-name'].strip() or 'index'
        self.path_option('indexes', settings.indexes_directory)
        self.path_option('pool', settings.pool_directory)
        o.setdefault('buildout', '')

    def arguments(self):
        o = self.options
        return dict(prog=self.script, indexes=o['indexes'], pool=o['pool'],
                    buildout=os.path.abspath(o['buildout'].strip())
                    if o['buildout'].strip() else None)
