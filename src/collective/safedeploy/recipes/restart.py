"""``recipe = collective.safedeploy:restart``: generates bin/restart, which
restarts the site's processes onto the release that is current -- the
``after-flip`` command of a site whose processes run from the releases::

    [safedeploy]
    after-flip = ${buildout:directory}/bin/restart

    [restart]
    recipe = collective.safedeploy:restart
    zdaemon = instance
    supervisorctl = ${buildout:directory}/current/bin/supervisorctl
    programs = instance

Options (all optional):

zdaemon
    default: empty.  zdaemon control scripts of the release (names in its
    ``bin``, e.g. ``instance``, or absolute paths): each is stopped, its
    daemon manager waited for, and started again through ``current/bin``.
supervisorctl
    default: empty.  The supervisorctl to run ``reread``, ``update`` and
    ``restart PROGRAMS`` with.
supervisord
    default: empty.  The supervisord to start when supervisorctl finds
    none running (the first release, or after a reboot).
programs
    default: ``all``.  The supervisor programs to restart.
timeout
    default: ``60``.  Seconds each stop or start may take.
current
    default: ``${safedeploy:current}`` (``${buildout:directory}/current``)
"""
import os

from ..core import options as opts
from ..core.errors import ConfigurationError
from .base import EGG_OPTIONS
from .base import RootScript


class Restart(RootScript):

    script = 'restart'
    module = 'collective.safedeploy.release.processes'
    schema = opts.Schema([
        opts.Option('zdaemon', '', opts.words),
        opts.Option('supervisorctl', '', opts.text),
        opts.Option('supervisord', '', opts.text),
        opts.Option('programs', 'all', opts.words),
        opts.Option('timeout', '60', opts.number(1, 3600)),
        opts.Option('current', '', opts.text),
    ], allowed=EGG_OPTIONS)

    def configure(self):
        o = self.options
        for key, default in self.schema.defaults().items():
            o.setdefault(key, default)
        self.values = self.schema.parse(
            {k: o[k] for k in self.schema.options}, self.where)
        current = o['current'].strip() or self.settings().current
        o['current'] = os.path.normpath(os.path.join(self.directory,
                                                     current))
        if not self.values['zdaemon'] and not o['supervisorctl'].strip():
            raise ConfigurationError(
                '%s and %s are both empty: bin/restart would restart '
                'nothing; name the zdaemon scripts or the supervisorctl' % (
                    self.where('zdaemon'), self.where('supervisorctl')))
        if not self.values['programs']:
            raise ConfigurationError(
                '%s is empty; name the supervisor programs, or all'
                % self.where('programs'))

    def arguments(self):
        o = self.options
        return dict(current=o['current'],
                    zdaemon=list(self.values['zdaemon']),
                    supervisorctl=o['supervisorctl'].strip(),
                    supervisord=o['supervisord'].strip(),
                    programs=list(self.values['programs']),
                    timeout=self.values['timeout'])
