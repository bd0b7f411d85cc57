"""Recipe ``collective.safedeploy:index``: generates ``bin/index``.

::

    [index]
    recipe = collective.safedeploy:index
    # indexes = ${buildout:directory}/indexes   (default)
    # pool = ${buildout:directory}/pool         (default)
    # buildout = (the buildout command --rebuild runs; default: the one
    #             beside the Python that runs bin/index)
    # script-name = index

``bin/index`` belongs to the site, not to one release: the release
extension points ``${buildout:bin-directory}`` into the release and keeps
the site's own in ``[buildout] safedeploy-root-bin-directory``.  The
script is generated in the release like any other, then copied atomically
into the site's bin directory.  All the work is in
:func:`collective.safedeploy.index.main`.
"""
import os
import sys

import zc.buildout.easy_install
import zc.recipe.egg

from . import fsutil

ROOT_BIN = 'safedeploy-root-bin-directory'


class Recipe:

    def __init__(self, buildout, name, options):
        b = buildout['buildout']
        safedeploy = (buildout['safedeploy']
                      if 'safedeploy' in buildout._raw else {})
        options.setdefault('eggs', 'collective.safedeploy')
        options.setdefault('script-name', 'index')
        options.setdefault('indexes', safedeploy.get('indexes-directory') or
                           os.path.join(b['directory'], 'indexes'))
        options.setdefault('pool', safedeploy.get('pool-directory') or
                           os.path.join(b['directory'], 'pool'))
        options.setdefault('buildout', '')
        options['bin-directory'] = b['bin-directory']
        options['root-bin-directory'] = b.get(ROOT_BIN) or b['bin-directory']
        self.egg = zc.recipe.egg.Eggs(buildout, name, options)
        self.options = options

    def install(self):
        o = self.options
        reqs, ws = self.egg.working_set()
        arguments = 'prog=%r, indexes=%r, pool=%r' % (
            o['script-name'], absolute(o['indexes']), absolute(o['pool']))
        if o['buildout'].strip():
            arguments += ', buildout=%r' % absolute(o['buildout'].strip())
        paths = zc.buildout.easy_install.scripts(
            [(o['script-name'], 'collective.safedeploy.index', 'main')],
            ws, sys.executable, o['bin-directory'], arguments=arguments)
        root = o['root-bin-directory']
        if os.path.realpath(root) != os.path.realpath(o['bin-directory']):
            os.makedirs(root, exist_ok=True)
            for path in paths:
                fsutil.atomic_copy(path, os.path.join(
                    root, os.path.basename(path)))
        return paths

    update = install


def absolute(path):
    return os.path.abspath(path)
