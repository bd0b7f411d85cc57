"""safedeploy:through-current: process configuration that names the
release through ``current``.

A process manager started from one release runs its programs long after
that release stopped being current.  So in what a supervisor part (every
collective.recipe.supervisor part, and those named in
``through-current``) generated into a release, paths into the release
(``releases/<tag>/bin/instance``) become the same paths through
``current`` (``current/bin/instance``), before the release is complete.
"""
import logging
import os

from ..core import fsutil
from ..core.errors import ConfigurationError
from .excluded import installed_paths

logger = logging.getLogger('collective.safedeploy')

SUPERVISOR_RECIPES = ('collective.recipe.supervisor',)
# the option naming the file a recipe generates, per kind of part
GENERATED_FILE_OPTIONS = ('supervisord-conf', 'output')


def through_current_parts(settings, buildout, parts):
    """The parts whose configuration is rewritten: every
    collective.recipe.supervisor part, and those in through-current."""
    found = []
    for part in parts:
        recipe = buildout._raw.get(part, {}).get('recipe', '')
        if recipe.split(':')[0].strip().lower() in SUPERVISOR_RECIPES or \
                part in settings.through_current:
            found.append(part)
    return found


def rewrite(settings, buildout, release_path, parts):
    """A process manager started from one release runs its programs
    long after that release stopped being current: in the configuration a
    supervisor part generated into the release, every path into the
    release (``releases/<tag>/bin/instance``) becomes the same path
    through ``current`` (``current/bin/instance``), and the part's own
    scripts (bin/supervisord, bin/supervisorctl) load that configuration
    through ``current`` too -- so after a flip, ``supervisorctl reread``,
    ``update`` and ``restart`` run the release that is current, and
    pruning the release supervisord was started from takes nothing from
    under it.  Only files inside the release are rewritten."""
    current = settings.current
    prefix = release_path.rstrip(os.sep) + os.sep
    installed = os.path.join(release_path, '.installed.cfg')
    for part in through_current_parts(settings, buildout, parts):
        options = buildout[part]
        configs = [options[o] for o in GENERATED_FILE_OPTIONS
                   if options.get(o)]
        if not configs:
            raise ConfigurationError(
                'safedeploy:through-current names %s, which has none of the '
                'options %s naming the file it generates; remove it from '
                'through-current' % (part, ', '.join(GENERATED_FILE_OPTIONS)))
        renamed = {c: os.path.join(current, c[len(prefix):])
                   for c in configs if c.startswith(prefix)}
        for path in configs:
            if not path.startswith(prefix):
                logger.warning(
                    '[%s] writes %s outside the release: it is not rewritten '
                    'through current', part, path)
        files = set(configs) | set(installed_paths(installed, part))
        for path in sorted(files):
            if not path.startswith(prefix) or not os.path.isfile(path) or \
                    os.path.islink(path):
                continue
            try:
                with open(path, encoding='utf-8') as f:
                    text = f.read()
            except (UnicodeDecodeError, ValueError):
                continue            # not a text file
            if path in configs:
                new = text.replace(prefix, current.rstrip(os.sep) + os.sep)
            else:                   # a script: only where it finds its
                new = text          # configuration
                for old, through in renamed.items():
                    new = new.replace(old, through)
            if new != text:
                fsutil.atomic_write(path, new,
                                    mode=os.stat(path).st_mode & 0o7777)
                logger.info('through-current: %s names the release through '
                            '%s', os.path.relpath(path, release_path),
                            current)
