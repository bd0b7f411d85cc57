"""Buildout recipes: thin shells over the library.

Each recipe validates its options, fills in the documented defaults and
generates a script through zc.buildout's own script machinery that calls
a library ``main`` with the options as keyword arguments.  Scripts that
must outlive any one release (bin/rollback) are written to the buildout's
root bin directory, atomically.
"""
import os
import sys

import zc.buildout
import zc.buildout.easy_install
import zc.recipe.egg

from . import fsutil
from . import release
from .errors import SafeDeployError


def root_bin_directory(buildout):
    b = buildout['buildout']
    return b.get('safedeploy-root-bin-directory') or b['bin-directory']


def generate_root_script(buildout, name, options, script_name, module,
                         function, arguments):
    """Generate ``script_name`` in the part's bin directory, then copy it
    atomically into the root bin directory.  Returns the paths."""
    options.setdefault('eggs', 'collective.safedeploy')
    egg = zc.recipe.egg.Eggs(buildout, name, options)
    reqs, ws = egg.working_set(['collective.safedeploy'])
    bin_directory = buildout['buildout']['bin-directory']
    generated = zc.buildout.easy_install.scripts(
        [(script_name, module, function)], ws, sys.executable,
        bin_directory, arguments=arguments)
    paths = list(generated)
    root = root_bin_directory(buildout)
    if os.path.realpath(root) != os.path.realpath(bin_directory):
        os.makedirs(root, exist_ok=True)
        source = os.path.join(bin_directory, script_name)
        target = os.path.join(root, script_name)
        fsutil.atomic_copy(source, target)
        paths.append(target)
    return paths


class Rollback:
    """``recipe = collective.safedeploy:rollback``: generates bin/rollback.

    Options (all optional; the defaults come from [safedeploy]):

    releases-directory
        default: ``${safedeploy:releases-directory}`` or
        ``${buildout:directory}/releases``
    current
        default: ``${safedeploy:current}`` or ``${buildout:directory}/current``
    evolve-copy
        default: empty.  The name of the evolve-copy part: rolling back to
        a release that ran on an older data generation switches the data
        back too, through its bin/evolve-copy (refusing to discard writes
        made since the switch unless ``--discard-writes``).
    """

    def __init__(self, buildout, name, options):
        self.buildout, self.name, self.options = buildout, name, options
        section = (dict(buildout['safedeploy'])
                   if 'safedeploy' in buildout._raw else {})
        directory = buildout['buildout']['directory']
        for key in ('releases-directory', 'current'):
            if key not in options and key in section:
                options[key] = section[key]
        try:
            settings = release.Settings(directory, dict(
                (k, options[k]) for k in ('releases-directory', 'current')
                if k in options))
        except SafeDeployError as e:
            raise zc.buildout.UserError(str(e))
        options['releases-directory'] = settings.releases_directory
        options['current'] = settings.current
        options['buildout-directory'] = directory
        part = options.get('evolve-copy', '').strip()
        if part:
            if part not in buildout._raw:
                raise zc.buildout.UserError(
                    '[%s] evolve-copy = %s is not a section; give the name '
                    'of your evolve-copy part' % (name, part))
            options['data'] = buildout[part]['data']
            options['evolve-copy-script'] = os.path.join(
                root_bin_directory(buildout), 'evolve-copy')

    def install(self):
        o = self.options
        arguments = ('releases_directory=%r, current=%r, '
                     'buildout_directory=%r' % (
                         o['releases-directory'], o['current'],
                         o['buildout-directory']))
        if o.get('evolve-copy-script'):
            arguments += ', evolve_copy=%r, data=%r' % (
                o['evolve-copy-script'], o['data'])
        return generate_root_script(
            self.buildout, self.name, o, 'rollback',
            'collective.safedeploy.rollback', 'main', arguments)

    update = install


class Excluded:
    """Stands in, inside a release, for a part listed in
    ``safedeploy:exclude-parts``: the real part is installed once, outside
    the releases, so a release installs nothing for it."""

    def __init__(self, buildout, name, options):
        pass

    def install(self):
        return ()

    update = install
