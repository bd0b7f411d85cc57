"""``recipe = collective.safedeploy:evolve-copy``: generates bin/evolve-copy.

A thin shell over :func:`collective.safedeploy.evolve.command.main`::

    [evolve-copy]
    recipe = collective.safedeploy:evolve-copy
    data = ${snapshot:data}
    zeo = zeoserver
    evolve = karl.evolve.zodb
    eggs = karl

Options: ``data`` (the data root), ``evolve`` (a package of evolveN
modules, ``package:schema_manager`` or ``module:function``),
``evolve-context``, ``evolve-key``; how production is frozen: ``zeo`` (the
ZEO server part; its ``zeo-address`` or ``address``), ``zeo-address``,
``zeo-state`` (default ``${buildout:directory}/var/safedeploy-zeo``),
``runzeo``, or ``freeze-command`` and ``thaw-command``; around a switch
back: ``client-stop-command``, ``client-start-command``,
``client-cache`` (glob patterns of the clients' ``*.zec`` files);
``release`` (recorded when no ``current`` release is found),
``current`` (default ``${safedeploy:current}``) and ``keep-generations``
(data generations kept after a successful run, default 3; 0: all).

On RelStorage/PostgreSQL: ``storage = relstorage`` (default
``filestorage``) and ``dsn`` (the clients' libpq DSN; its ``dbname`` is
the site's database); ``keep-history`` (default: what the schema is),
``blob-cache``, ``shared-blob-dir`` and ``client-cache`` (the clients'
``cache-local-dir``).  Production is frozen by RelStorage's own commit
lock: no ``zeo`` or freeze command.
"""
import os
import re

from ..core import commands
from ..core import options as opts
from ..core.errors import ConfigurationError
from ..data import relstorage_options
from ..data.layout import DEFAULT_KEEP_GENERATIONS
from ..zeo.control import check_choice
from ..release.settings import has_section
from .base import EGG_OPTIONS
from .base import RootScript

# option -> keyword argument of evolve.command.main
PASSED = ('data', 'evolve', 'evolve-context', 'evolve-key', 'zeo-address',
          'zeo-state', 'runzeo', 'freeze-command', 'thaw-command',
          'release', 'client-stop-command', 'client-start-command',
          'client-cache', 'current', 'keep-generations', 'storage', 'dsn',
          'keep-history', 'blob-cache', 'shared-blob-dir')


def _command(raw, where):
    value = (raw or '').strip()
    commands.split(value, where)
    return value


class EvolveCopy(RootScript):

    script = 'evolve-copy'
    module = 'collective.safedeploy.evolve.command'
    schema = opts.Schema([
        opts.Option('data', '', opts.required(
            example='data = ${snapshot:data}')),
        opts.Option('evolve', '', opts.required(
            example='evolve = a package of evolveN modules, '
                    'package:schema_manager or module:function')),
        opts.Option('evolve-context', '', opts.text),
        opts.Option('evolve-key', '', opts.text),
        opts.Option('zeo', '', opts.text),
        opts.Option('zeo-address', '', opts.address),
        opts.Option('zeo-state', '', opts.text),
        opts.Option('runzeo', '', opts.text),
        opts.Option('freeze-command', '', _command),
        opts.Option('thaw-command', '', _command),
        opts.Option('release', '', opts.text),
        opts.Option('client-stop-command', '', _command),
        opts.Option('client-start-command', '', _command),
        opts.Option('current', '', opts.text),
        opts.Option('keep-generations', str(DEFAULT_KEEP_GENERATIONS),
                    opts.integer(0)),
    ] + relstorage_options.OPTIONS, allowed=EGG_OPTIONS)

    def configure(self):
        o = self.options
        values = self.schema.parse(o, self.where)
        zeo = values['zeo']
        if values['storage'] == 'relstorage':
            return self.configure_relstorage(values)
        try:
            check_choice(zeo or values['zeo-address'],
                         values['freeze-command'], values['thaw-command'],
                         required=True)
        except ConfigurationError as e:
            raise ConfigurationError('[%s]: %s' % (self.name, e))
        if zeo:
            if not has_section(self.buildout, zeo):
                raise ConfigurationError(
                    '%s = %s is not a section; give the name of your ZEO '
                    'server part' % (self.where('zeo'), zeo))
            part = self.buildout[zeo]
            address = values['zeo-address'] or opts.address(
                part.get('zeo-address') or part.get('address'),
                '[%s] zeo-address' % zeo)
            if not address:
                raise ConfigurationError(
                    '[%s] has no zeo-address; set zeo-address in [%s] or '
                    '[%s]' % (zeo, zeo, self.name))
            o['zeo-address'] = address
            o.setdefault('zeo-state', os.path.join(
                self.directory, 'var', 'safedeploy-zeo'))
        self.path_option('data', values['data'])
        # the code release the switched data is paired with: the one
        # `current` points to when bin/evolve-copy runs
        if not o.get('current', '').strip():
            o['current'] = self.settings().current
        o.setdefault('eggs', '')
        o['keep-generations'] = str(values['keep-generations'])

    def configure_relstorage(self, values):
        o = self.options
        if not values['dsn']:
            raise ConfigurationError(
                '%s is required with storage = relstorage, e.g. dsn = '
                'dbname=site host=/run/postgresql' % self.where('dsn'))
        if not re.search(r'(^|\s)dbname\s*=\s*[a-z_][a-z0-9_]*(\s|$)',
                         values['dsn']):
            raise ConfigurationError(
                '%s = %s must name the site\'s database with dbname= (lower-'
                'case letters, digits and "_"), e.g. dbname=site host=/run/'
                'postgresql' % (self.where('dsn'), values['dsn']))
        self.path_option('data', values['data'])
        if not o.get('current', '').strip():
            o['current'] = self.settings().current
        o.setdefault('eggs', '')

    def eggs(self):
        # what evolve-copy itself needs: ZODB (catch-up, verify, evolve),
        # zc.beforestorage (--rehearse), ZEO (the built-in freeze/thaw)
        needed = ['collective.safedeploy', 'ZODB', 'zc.beforestorage']
        if self.options.get('zeo-address'):
            needed.append('ZEO')
        if self.options.get('storage') == 'relstorage':
            needed += ['RelStorage', 'psycopg2-binary']
        return needed

    def arguments(self):
        o = self.options
        return {key.replace('-', '_'): o[key] for key in PASSED
                if o.get(key, '').strip()}
