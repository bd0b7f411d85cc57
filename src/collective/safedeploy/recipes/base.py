"""What every collective.safedeploy recipe is: a thin shell over a library
function.

A recipe checks its options when buildout reads its part (unknown names,
bad values: one line, before anything is built), fills in the documented
defaults with ``options.setdefault`` and generates one script through
zc.buildout's own script machinery; the script calls a library
``main(**options)``.

The scripts belong to the site, not to one release (bin/rollback must
work when the current release is broken): with the extension, the script
is generated into the release's bin directory like any other, and the
release records it as a *root script*.  The release lifecycle copies the
root scripts of whichever release becomes current into the buildout's own
bin directory (:func:`~collective.safedeploy.release.lifecycle.
install_root_scripts`) -- at publish, at a rollback, at a flip back --
so a failed build never touches them and they always run the current
release's code.
"""
import os
import sys

import zc.buildout.easy_install
import zc.recipe.egg

from ..core import options as opts
from ..core.errors import SafeDeployError
from ..release import settings as configuration
from ..release.extension import SafeDeployUserError

# options of buildout and zc.recipe.egg a part may carry besides ours
EGG_OPTIONS = (
    'recipe', 'eggs', 'find-links', 'index', 'allow-hosts', 'extra-paths',
    'python', 'newest', 'allow-picked-versions', 'include-site-packages',
    'allowed-eggs-from-site-packages', 'initialization', 'relative-paths',
    'dependent-scripts', 'interpreter', 'entry-points', 'scripts',
    'arguments', 'bin-directory', 'develop-eggs-directory',
    'eggs-directory', 'executable')

ROOT_BIN = 'safedeploy-root-bin-directory'

# The first lines of every script we generate: an interrupt before the
# command has started (while it imports) ends it with one line, and the
# exit code of the signal; the command installs its own handlers next.
EARLY_SIGNALS = """\
import os as _os, signal as _signal, sys as _sys
def _interrupted_early(signum, frame):
    _sys.stderr.write('%s: interrupted before it started; nothing was '
                      'changed\\n' % _os.path.basename(_sys.argv[0]))
    _os._exit(128 + signum)
for _signum in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
    _signal.signal(_signum, _interrupted_early)"""


def root_bin_directory(buildout):
    b = buildout['buildout']
    return b.get(ROOT_BIN) or b['bin-directory']


def user_error(function):
    """Run a recipe step; a SafeDeployError becomes buildout's UserError
    (with the extension: one line, without buildout's "While:")."""
    def wrapper(self, *args, **kw):
        try:
            return function(self, *args, **kw)
        except SafeDeployError as e:
            raise SafeDeployUserError(str(e))
    wrapper.__name__ = function.__name__
    wrapper.__doc__ = function.__doc__
    return wrapper


class RootScript:
    """Base class: generates ``script`` calling ``module:function``.

    Subclasses set :attr:`schema` (their options), :attr:`script`,
    :attr:`module`, :attr:`function`, and implement :meth:`configure`
    (defaults and cross-option checks) and :meth:`arguments` (the keyword
    arguments of the generated call)."""

    schema = opts.Schema([])
    script = None
    module = None
    function = 'main'

    @user_error
    def __init__(self, buildout, name, options):
        self.buildout, self.name, self.options = buildout, name, options
        self.directory = buildout['buildout']['directory']
        self.where = opts.section_where(name)
        self.schema.check_names(options, self.where)
        self.configure()

    def settings(self):
        """The checked [safedeploy] settings (read once per run)."""
        return configuration.from_buildout(self.buildout)

    def configure(self):
        """Check the options and fill in defaults (``options.setdefault``);
        nothing is installed here."""

    def path_option(self, key, default):
        """Set option ``key`` to an absolute, normalised path: its value,
        else ``default``, taken relative to the buildout directory."""
        value = (self.options.get(key) or '').strip() or default
        self.options[key] = os.path.normpath(
            os.path.join(self.directory, value))
        return self.options[key]

    def arguments(self):
        """{keyword: value} of the generated ``main`` call."""
        return {}

    def eggs(self):
        """Distributions the script needs besides the part's ``eggs``."""
        return ['collective.safedeploy']

    def scripts(self):
        """(script name, module, function, keyword arguments) of each
        script; one by default."""
        return [(self.script, self.module, self.function, self.arguments())]

    @user_error
    def install(self):
        o = self.options
        o.setdefault('eggs', 'collective.safedeploy')
        egg = zc.recipe.egg.Eggs(self.buildout, self.name, o)
        _, ws = egg.working_set(self.eggs())
        bin_directory = self.buildout['buildout']['bin-directory']
        paths = []
        for script, module, function, kw in self.scripts():
            arguments = ', '.join('%s=%r' % (k, v) for k, v in sorted(
                kw.items()) if v not in (None, ''))
            paths.extend(zc.buildout.easy_install.scripts(
                [(script, module, function)], ws, sys.executable,
                bin_directory, arguments=arguments,
                initialization=EARLY_SIGNALS))
            # installed into the root bin directory when the release is
            # published (the extension records the names)
            names = getattr(self.buildout, '_safedeploy_root_scripts', None)
            if names is None:
                names = self.buildout._safedeploy_root_scripts = set()
            names.add(script)
        return paths

    update = install
