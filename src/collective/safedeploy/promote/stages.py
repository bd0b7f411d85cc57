"""The stages a site declares, read from one INI file::

    [stages]
    order = dev beta test prod

    [stage:beta]
    root = /srv/site-beta
    twin = /srv/site-beta_upgrade
    balancer = haproxy:/run/haproxy/admin.sock backend=beta state-file=...
    servers = main1 main2
    twin-servers = twin1
    zeo = 127.0.0.1:8100
    twin-zeo = 127.0.0.1:8200
    data-from = self
    check = http://127.0.0.1:8081/ok http://127.0.0.1:8082/ok
    twin-check = http://127.0.0.1:8091/ok

Options (defaults in brackets): ``root`` and ``twin`` (safedeploy sites);
``data`` [ROOT/data] and ``twin-data`` [TWIN/data], their data roots;
``zeo`` and ``twin-zeo``, the addresses of the ZEO servers safedeploy
runs for them, with their state in ``zeo-state`` [ROOT/var/safedeploy-zeo]
and ``twin-zeo-state`` [TWIN/var/safedeploy-zeo]; ``balancer``;
``servers`` and ``twin-servers``, their names in the balancer's backend;
``check`` and ``twin-check``, URLs answering 2xx when that set is healthy
[none]; ``data-from`` [self]; ``previous-data`` [the previous stage's
``data``], the data root ``data-from = previous`` copies; ``pack``
[false]; ``client-cache`` and ``twin-client-cache``, glob patterns of
each set's ZEO client cache files (``*.zec``, in the directory named by
the clients' ``var``, named after their ``client``), and
``client-stop-command``, ``client-start-command``,
``twin-client-stop-command``, ``twin-client-start-command``, which stop
and start each set's clients around it when its data goes backwards
[none]; ``release`` [previous]: each set gets the release current on the
previous stage (its site ``previous-root`` [the previous stage's
``root``], its package indexes in ``previous-indexes``
[PREVIOUS-ROOT/indexes]), built by ``buildout`` [ROOT/bin/buildout] and
``twin-buildout`` [TWIN/bin/buildout]; ``none``: releases are left alone;
``evolve``, ``evolve-context``, ``evolve-key``, the evolve run on
every copy, as evolve-copy's options of those names [none];
``drain-timeout`` [30] seconds; ``check-timeout`` [30] seconds.
"""
import configparser
import os

from ..balancer import parse_spec
from ..core import commands
from ..core.errors import ConfigurationError
from ..core.store import validate_name

KNOWN = ('root', 'twin', 'data', 'twin-data', 'zeo', 'twin-zeo',
         'zeo-state', 'twin-zeo-state', 'balancer', 'servers',
         'twin-servers', 'check', 'twin-check', 'data-from',
         'previous-data', 'pack', 'client-cache', 'twin-client-cache',
         'client-stop-command', 'client-start-command',
         'twin-client-stop-command', 'twin-client-start-command',
         'evolve', 'evolve-context', 'evolve-key', 'release',
         'previous-root', 'previous-indexes', 'buildout', 'twin-buildout',
         'drain-timeout', 'check-timeout')
REQUIRED = ('root', 'twin', 'balancer', 'servers', 'twin-servers', 'zeo',
            'twin-zeo')
DATA_FROM = ('self', 'previous')
RELEASE = ('previous', 'none')
# command lines, checked when the file is read: a bad quote or shell
# syntax is refused before anything is done
COMMANDS = ('client-stop-command', 'client-start-command',
            'twin-client-stop-command', 'twin-client-start-command',
            'buildout', 'twin-buildout')


class Stage:
    """One ``[stage:NAME]``; ``main`` and ``twin`` are its two sets."""

    def __init__(self, name, values, previous):
        self.name = name
        self.previous = previous
        self.values = values
        v = values
        self.root = v['root']
        self.twin_root = v['twin']
        self.balancer = v['balancer']
        self.data_from = v.get('data-from', 'self')
        # the data root data-from = previous copies (set by load())
        self.previous_data = v.get('previous-data') or None
        self.pack = v.get('pack', 'false') == 'true'
        self.evolve = v.get('evolve') or None
        self.release = v.get('release', 'previous')
        # the previous stage's site and indexes (set by load())
        self.previous_root = v.get('previous-root') or None
        self.previous_indexes = v.get('previous-indexes') or None
        self.evolve_context = v.get('evolve-context') or None
        self.evolve_key = v.get('evolve-key') or None
        self.drain_timeout = float(v.get('drain-timeout', '30'))
        self.check_timeout = float(v.get('check-timeout', '30'))
        self.main = self._set('main', v, '', self.root)
        self.twin = self._set('twin', v, 'twin-', self.twin_root)

    @staticmethod
    def _set(name, v, prefix, root):
        """The main set's options are the plain names, the twin's the same
        names with ``twin-`` in front."""
        def get(key, default=''):
            return v.get(prefix + key) or default
        return Set(name, v[prefix + 'servers'].split(), v[prefix + 'zeo'],
                   get('data', os.path.join(root, 'data')),
                   get('zeo-state', os.path.join(root, 'var',
                                                 'safedeploy-zeo')),
                   get('check').split(), get('client-cache').split(),
                   get('client-stop-command', None),
                   get('client-start-command', None), root,
                   get('buildout', os.path.join(root, 'bin', 'buildout')))

    def as_dict(self):
        return dict(name=self.name, previous=self.previous,
                    root=self.root, twin=self.twin_root,
                    balancer=self.balancer, data_from=self.data_from,
                    previous_data=self.previous_data,
                    pack=self.pack, evolve=self.evolve,
                    release=self.release, previous_root=self.previous_root,
                    servers=self.main.servers,
                    twin_servers=self.twin.servers)


class Set:
    """The main set or the twin: its servers in the balancer, its ZEO
    server, its data root, its checks, its ZEO clients' caches (with
    the commands that stop and start those clients), its site and the
    buildout command that builds its releases."""

    def __init__(self, role, servers, zeo, data, zeo_state, checks,
                 client_cache=(), client_stop=None, client_start=None,
                 root=None, buildout=None):
        self.role, self.servers, self.zeo = role, servers, zeo
        self.data, self.zeo_state, self.checks = data, zeo_state, checks
        self.client_cache = list(client_cache)
        self.client_stop, self.client_start = client_stop, client_start
        self.root, self.buildout = root, buildout

    def describe(self):
        return '%s (%s)' % (self.role, ' '.join(self.servers))


def load(path):
    """{name: Stage} in pipeline order, checked."""
    parser = configparser.ConfigParser(interpolation=None,
                                       inline_comment_prefixes=('#',))
    try:
        with open(path) as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise ConfigurationError(
            'the stages file %s does not exist; write it with a [stages] '
            'order = ... section and one [stage:NAME] per stage' % path)
    except configparser.Error as e:
        raise ConfigurationError('%s: %s' % (path, str(e).splitlines()[0]))
    if not parser.has_option('stages', 'order'):
        raise ConfigurationError(
            '%s: [stages] order = is missing; e.g. order = dev beta test '
            'prod' % path)
    order = parser.get('stages', 'order').split()
    for name in order:
        validate_name(name, 'stage name')
    declared = [s.split(':', 1)[1] for s in parser.sections()
                if s.startswith('stage:')]
    for name in declared:
        if name not in order:
            raise ConfigurationError(
                '%s: [stage:%s] is not in [stages] order; add it there or '
                'remove the section' % (path, name))
    stages = {}
    for i, name in enumerate(order):
        previous = order[i - 1] if i else None
        section = 'stage:%s' % name
        if not parser.has_section(section):
            stages[name] = None     # declared in order, not promotable
            continue
        values = dict(parser.items(section))
        where = '%s [%s]' % (path, section)
        for key in values:
            if key not in KNOWN:
                raise ConfigurationError(
                    '%s: unknown option %s; known: %s' % (
                        where, key, ', '.join(KNOWN)))
        for key in REQUIRED:
            if not values.get(key, '').strip():
                raise ConfigurationError('%s: %s = is missing' % (where, key))
        if values.get('data-from', 'self') not in DATA_FROM:
            raise ConfigurationError(
                '%s: data-from = %s; use self or previous' % (
                    where, values['data-from']))
        if values.get('data-from') == 'previous' and previous is None:
            raise ConfigurationError(
                '%s: data-from = previous, but %s is the first stage' % (
                    where, name))
        if values.get('release', 'previous') not in RELEASE:
            raise ConfigurationError(
                '%s: release = %s; use previous or none' % (
                    where, values['release']))
        if values.get('release', 'previous') == 'previous' and \
                previous is None:
            raise ConfigurationError(
                '%s: release = previous, but %s is the first stage; set '
                'release = none' % (where, name))
        if values.get('pack', 'false') not in ('true', 'false'):
            raise ConfigurationError('%s: pack = true or false' % where)
        for key in ('drain-timeout', 'check-timeout'):
            try:
                float(values.get(key, '1'))
            except ValueError:
                raise ConfigurationError('%s: %s = a number of seconds' % (
                    where, key))
        for key in COMMANDS:
            commands.split(values.get(key), '%s %s' % (where, key))
        parse_spec(values['balancer'])
        both = set(values['servers'].split()) & set(
            values['twin-servers'].split())
        if both:
            raise ConfigurationError(
                '%s: %s in both servers and twin-servers' % (
                    where, ', '.join(sorted(both))))
        stages[name] = Stage(name, values, previous)
    for name, stage in stages.items():
        if stage is None:
            continue
        before = stages[stage.previous] if stage.previous else None
        if stage.release == 'previous' and not stage.previous_root:
            if before is None:
                raise no_previous_section(
                    path, stage, 'release', 'site',
                    'previous-root = its site (or release = none)')
            stage.previous_root = before.root
        if stage.release == 'previous' and not stage.previous_indexes:
            stage.previous_indexes = os.path.join(stage.previous_root,
                                                  'indexes')
        if stage.data_from != 'previous' or stage.previous_data:
            continue
        if before is None:
            raise no_previous_section(path, stage, 'data-from', 'data root',
                                      'previous-data = its data root')
        stage.previous_data = before.main.data
    return stages


def no_previous_section(path, stage, option, what, setting):
    """``option = previous`` where the previous stage is not in the file:
    the error saying which setting names it instead."""
    return ConfigurationError(
        '%s [stage:%s]: %s = previous, but stage %s has no [stage:%s] '
        'section to take its %s from; set %s' % (
            path, stage.name, option, stage.previous, stage.previous, what,
            setting))


def get(stages, name, path):
    if name not in stages:
        raise ConfigurationError(
            'no stage %r in %s; stages: %s' % (name, path, ' '.join(stages)))
    if stages[name] is None:
        raise ConfigurationError(
            'stage %s has no [stage:%s] section in %s; add one to promote '
            'it' % (name, name, path))
    return stages[name]
