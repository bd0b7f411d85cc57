"""``recipe = collective.safedeploy:evolve-copy``: generates bin/evolve-copy.

A thin shell over :func:`collective.safedeploy.evolvecopy.main`::

    [evolve-copy]
    recipe = collective.safedeploy:evolve-copy
    data = ${snapshot:data}
    zeo = zeoserver
    evolve = karl.evolve.zodb
    eggs = karl

The script is generated like any other, then copied atomically into the
*root* bin directory: ``bin/evolve-copy`` must outlive any one release
(the release extension points ``${buildout:bin-directory}`` into the
release being built and keeps the site's own in
``[buildout] safedeploy-root-bin-directory``).
"""
import os
import sys

import zc.buildout
import zc.buildout.easy_install
import zc.recipe.egg

from . import fsutil

ROOT_BIN = 'safedeploy-root-bin-directory'

# option -> keyword argument of evolvecopy.main
PASSED = ('data', 'evolve', 'evolve-context', 'evolve-key', 'zeo-address',
          'zeo-state', 'runzeo', 'freeze-command', 'thaw-command',
          'release', 'client-stop-command', 'client-start-command',
          'client-cache', 'current')


class EvolveCopy:

    def __init__(self, buildout, name, options):
        self.buildout, self.name, self.options = buildout, name, options
        b = buildout['buildout']
        if not options.get('data'):
            raise zc.buildout.UserError(
                '[%s] needs data = the data root (generations/ and current), '
                'e.g. data = ${snapshot:data}' % name)
        if not options.get('evolve'):
            raise zc.buildout.UserError(
                '[%s] needs evolve = a package of evolveN modules, '
                'package:schema_manager or module:function' % name)
        zeo = options.get('zeo')
        commands = options.get('freeze-command') or options.get(
            'thaw-command')
        if zeo and commands:
            raise zc.buildout.UserError(
                '[%s]: set either zeo or freeze-command and thaw-command, '
                'not both' % name)
        if commands and not (options.get('freeze-command') and
                             options.get('thaw-command')):
            raise zc.buildout.UserError(
                '[%s]: freeze-command and thaw-command go together' % name)
        if not zeo and not commands:
            raise zc.buildout.UserError(
                '[%s] needs zeo = <ZEO part> or freeze-command and '
                'thaw-command' % name)
        if zeo:
            part = buildout[zeo]
            address = options.get('zeo-address') or part.get('zeo-address')
            if not address:
                raise zc.buildout.UserError(
                    '[%s] has no zeo-address; set zeo-address in [%s] or '
                    '[%s]' % (zeo, zeo, name))
            options['zeo-address'] = address
            options.setdefault('zeo-state', os.path.join(
                b['directory'], 'var', 'safedeploy-zeo'))
        options['data'] = os.path.join(b['directory'], options['data'])
        # the code release the switched data is paired with: the one
        # `current` points to when bin/evolve-copy runs
        section = (buildout['safedeploy'] if 'safedeploy' in buildout._raw
                   else {})
        options.setdefault('current', os.path.join(b['directory'], section.get(
            'current', os.path.join(b['directory'], 'current'))))
        options.setdefault('eggs', '')
        options['root-bin-directory'] = b.get(ROOT_BIN) or b['bin-directory']

    def install(self):
        o = self.options
        arguments = ', '.join(
            '%s=%r' % (key.replace('-', '_'), o[key])
            for key in PASSED if o.get(key))
        eggs = zc.recipe.egg.Eggs(self.buildout, self.name, o)
        # what evolve-copy itself needs: ZODB (catch-up, verify, evolve),
        # zc.beforestorage (--rehearse), ZEO (the built-in freeze/thaw)
        needed = ['collective.safedeploy', 'ZODB', 'zc.beforestorage']
        if o.get('zeo-address'):
            needed.append('ZEO')
        _, ws = eggs.working_set(needed)
        bin_directory = self.buildout['buildout']['bin-directory']
        paths = list(zc.buildout.easy_install.scripts(
            [('evolve-copy', 'collective.safedeploy.evolvecopy', 'main')],
            ws, sys.executable, bin_directory, arguments=arguments))
        root = o['root-bin-directory']
        if os.path.realpath(root) != os.path.realpath(bin_directory):
            os.makedirs(root, exist_ok=True)
            target = os.path.join(root, 'evolve-copy')
            fsutil.atomic_copy(os.path.join(bin_directory, 'evolve-copy'),
                               target)
            paths.append(target)
        return paths

    update = install
