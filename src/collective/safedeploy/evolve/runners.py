"""The three kinds of evolve, run one committed step at a time.

``evolve =`` names one of:

- a **repoze.evolution-style package** (KARL's ``karl.evolve.zodb``): its
  modules ``evolve1``, ``evolve2``, ... each have ``evolve(context)``; the
  database's version is ``root['repoze.evolution'][<package name>]``; the
  target is the package's ``VERSION`` (else its highest ``evolveN``).
  repoze.evolution itself is not imported (0.6 needs ``pkg_resources``): its
  data layout and module convention are what count, so a database evolved
  here and one evolved by repoze.evolution are the same;
- a **zope.generations schema manager** ``package:utility`` (an object with
  ``generation``, ``evolve(context, generation)`` and optionally
  ``install(context)``): the generation is ``root['zope.generations'][key]``
  where ``key`` is the name the manager is registered under (default: its
  ``package_name``);
- a **callable** ``module:function`` called as ``function(root, commit)``:
  ``commit(note)`` ends one step; whatever is left uncommitted when the
  function returns is the last step.  Resuming is the function's business
  (it reads what it already did from ``root``).

Every step is its own transaction, committed together with the version it
reaches, and logged with its duration and the number of objects it wrote.
A run killed at any moment therefore resumes at the first step not
committed: running the same evolve again is all ``--resume`` does.

``transaction`` and ``persistent`` are imported where a database is
opened, not here: they are the site's dependencies, and the commands that
import this module show their ``--help`` without them.
"""
import importlib
import logging
import pkgutil
import re
import time

from ..core.errors import ConfigurationError
from ..core.errors import SafeDeployError

logger = logging.getLogger('collective.safedeploy')

REPOZE_KEY = 'repoze.evolution'
GENERATIONS_KEY = 'zope.generations'
EVOLVE_MODULE = re.compile(r'evolve(\d+)\Z')


class EvolveError(SafeDeployError):
    """An evolve step raised; the steps before it stay committed."""

    def __init__(self, step, error, done):
        self.step = step
        self.error = error
        self.done = done          # the Steps committed before it
        SafeDeployError.__init__(
            self, 'evolve step %s failed: %s: %s' % (
                step, type(error).__name__, error))


class Step:
    """What one committed step did."""

    def __init__(self, name, seconds, objects):
        self.name = name
        self.seconds = seconds
        self.objects = objects

    def as_dict(self):
        return dict(step=self.name, seconds=round(self.seconds, 6),
                    objects=self.objects)

    def __repr__(self):
        return '<Step %s %.3f s, %d objects>' % (
            self.name, self.seconds, self.objects)


class Context:
    """What zope.generations hands a schema manager."""

    def __init__(self, connection):
        self.connection = connection

    @property
    def root(self):
        return self.connection.root()


def _written(connection):
    """Objects the current transaction of ``connection`` will write."""
    registered = getattr(connection, '_registered_objects', ())
    added = getattr(connection, '_added', {})
    return len(registered) + len(added)


def commit_step(connection, name, started, log=logger):
    """Commit the current transaction as the step ``name``."""
    objects = _written(connection)
    size = _length(connection)
    connection.transaction_manager.get().note('evolve: %s' % name)
    connection.transaction_manager.commit()
    new = _length(connection) - size if size is not None else 0
    step = Step(name, time.monotonic() - started, objects + max(new, 0))
    log.info('evolve step %s: %.3f s, %d objects', name, step.seconds,
             step.objects)
    return step


def _length(connection):
    try:
        return len(connection.db().storage)
    except Exception:
        return None


class Runner:
    """One kind of evolve; subclasses say how versions are kept."""

    kind = None

    def pending(self, root):
        """Names of the steps still to run, in order."""
        raise NotImplementedError

    def reached(self, root):
        """True when the database is at the evolve's target version."""
        raise NotImplementedError

    def version(self, root):
        raise NotImplementedError

    def target(self):
        raise NotImplementedError

    def run(self, connection, log=logger, stop_after=None):
        """Run the pending steps, each committed on its own.

        Returns the list of :class:`Step`; raises :class:`EvolveError`
        (after aborting the failed step) when a step raises.
        """
        done = []
        for name, function in self._steps(connection):
            started = time.monotonic()
            try:
                function()
                done.append(commit_step(connection, name, started, log))
            except BaseException as e:
                connection.transaction_manager.abort()
                if isinstance(e, Exception) and not isinstance(
                        e, ConfigurationError):
                    raise EvolveError(name, e, done) from e
                raise
            if stop_after and len(done) >= stop_after:
                break
        return done


class PackageRunner(Runner):
    """repoze.evolution's layout: ``root['repoze.evolution'][package]``."""

    kind = 'repoze.evolution package'

    def __init__(self, package, context_key=None, name=None):
        self.package = package
        self.name = name or package.__name__
        self.context_key = context_key
        self.modules = {}
        for info in pkgutil.iter_modules(package.__path__):
            m = EVOLVE_MODULE.match(info.name)
            if m:
                self.modules[int(m.group(1))] = info.name
        self.sw_version = getattr(package, 'VERSION', None)
        if self.sw_version is None:
            self.sw_version = max(self.modules) if self.modules else 0
        self.initial = getattr(package, 'INITIAL_DB_VERSION', 0)

    def describe(self):
        return '%s %s (target version %d)' % (self.kind, self.name,
                                              self.sw_version)

    def target(self):
        return self.sw_version

    def version(self, root):
        registry = root.get(REPOZE_KEY)
        if registry is None or registry.get(self.name) is None:
            return self.initial
        return registry[self.name]

    def reached(self, root):
        return self.version(root) >= self.sw_version

    def pending(self, root):
        return ['%s.evolve%d' % (self.name, n) for n in
                range(self.version(root) + 1, self.sw_version + 1)]

    def _context(self, root):
        if not self.context_key:
            return root
        try:
            return root[self.context_key]
        except KeyError:
            raise ConfigurationError(
                'the database root has no %r for evolve-context; set '
                'evolve-context to the key of the site object' %
                self.context_key)

    def _steps(self, connection):
        root = connection.root()
        for n in range(self.version(root) + 1, self.sw_version + 1):
            if n not in self.modules:
                raise ConfigurationError(
                    '%s has no module evolve%d; add it or lower VERSION' %
                    (self.name, n))
            module = importlib.import_module(
                '%s.%s' % (self.package.__name__, self.modules[n]))

            def step(module=module, n=n):
                module.evolve(self._context(connection.root()))
                root = connection.root()
                _set(root, REPOZE_KEY, self.name, n)
            yield '%s.evolve%d' % (self.name, n), step


class GenerationsRunner(Runner):
    """zope.generations' layout: ``root['zope.generations'][key]``."""

    kind = 'zope.generations schema manager'

    def __init__(self, manager, key):
        self.manager = manager
        self.key = key

    def describe(self):
        return '%s %s (target generation %d)' % (self.kind, self.key,
                                                 self.manager.generation)

    def target(self):
        return self.manager.generation

    def version(self, root):
        generations = root.get(GENERATIONS_KEY)
        if generations is None:
            return None
        return generations.get(self.key)

    def reached(self, root):
        v = self.version(root)
        return v is not None and v >= self.manager.generation

    def pending(self, root):
        v = self.version(root)
        if v is None:
            return ['%s install' % self.key]
        return ['%s generation %d' % (self.key, g)
                for g in range(v + 1, self.manager.generation + 1)]

    def _set(self, connection, generation):
        _set(connection.root(), GENERATIONS_KEY, self.key, generation)

    def _steps(self, connection):
        context = Context(connection)
        v = self.version(connection.root())
        if v is None:
            # a database the manager never saw: install, like zope.generations
            def install():
                if hasattr(self.manager, 'install'):
                    self.manager.install(context)
                self._set(connection, self.manager.generation)
            yield '%s install' % self.key, install
            return
        for g in range(v + 1, self.manager.generation + 1):
            def step(g=g):
                self.manager.evolve(context, g)
                self._set(connection, g)
            yield '%s generation %d' % (self.key, g), step


class FunctionRunner(Runner):
    """``module:function(root, commit)``."""

    kind = 'function'

    def __init__(self, function, name):
        self.function = function
        self.name = name
        self.finished = False

    def describe(self):
        return '%s %s' % (self.kind, self.name)

    def target(self):
        return None

    def version(self, root):
        return None

    def reached(self, root):
        return True

    def pending(self, root):
        return [self.name]

    def run(self, connection, log=logger, stop_after=None):
        done = []
        state = dict(started=time.monotonic(), n=0)

        def commit(note=None):
            state['n'] += 1
            name = '%s: %s' % (self.name, note or 'step %d' % state['n'])
            done.append(commit_step(connection, name, state['started'], log))
            state['started'] = time.monotonic()

        current = self.name
        try:
            self.function(connection.root(), commit)
            if (_written(connection) or
                    connection.transaction_manager.get().isDoomed()):
                current = '%s: end' % self.name
                commit('end')
        except BaseException as e:
            connection.transaction_manager.abort()
            if isinstance(e, Exception):
                raise EvolveError(
                    '%s (after %d committed steps)' % (current, len(done)),
                    e, done) from e
            raise
        self.finished = True
        return done


def _set(root, registry, key, version):
    """``root[registry][key] = version``, the registry made when missing
    (a PersistentMapping, as both frameworks make it)."""
    from persistent.mapping import PersistentMapping
    if registry not in root:
        root[registry] = PersistentMapping()
    mapping = root[registry]
    mapping[key] = version
    if not hasattr(mapping, '_p_jar'):
        root._p_changed = True   # a plain dict someone stored there


def resolve(dotted):
    """Import ``package.module`` or ``package.module:attribute``."""
    module_name, _, attr = dotted.partition(':')
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigurationError(
            'evolve = %s: cannot import %s (%s); check the name and that the '
            'package is in the release\'s eggs' % (dotted, module_name, e))
    if not attr:
        return module
    obj = module
    for part in attr.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                'evolve = %s: %s has no %s' % (dotted, module_name, attr))
    return obj


def runner_for(spec, context_key=None, key=None):
    """The runner for an ``evolve =`` value."""
    spec = (spec or '').strip()
    if not spec:
        raise ConfigurationError(
            'no evolve given: set evolve = a package of evolveN modules, '
            'package:schema_manager or module:function')
    obj = resolve(spec)
    if ':' not in spec:
        if not hasattr(obj, '__path__'):
            raise ConfigurationError(
                'evolve = %s is a module, not a package of evolveN modules; '
                'name a package or use module:function' % spec)
        return PackageRunner(obj, context_key=context_key, name=key)
    if hasattr(obj, 'generation') and hasattr(obj, 'evolve'):
        return GenerationsRunner(obj, key or getattr(
            obj, 'package_name', None) or spec.partition(':')[0])
    if callable(obj):
        return FunctionRunner(obj, spec)
    raise ConfigurationError(
        'evolve = %s is neither a schema manager (generation, evolve) nor '
        'a function(root, commit)' % spec)


def evolve(db, spec, context_key=None, key=None, log=logger,
           stop_after=None):
    """Evolve the database ``db``; returns (runner, steps)."""
    import transaction
    runner = runner_for(spec, context_key, key) if isinstance(
        spec, str) else spec
    tm = transaction.TransactionManager()
    connection = db.open(transaction_manager=tm)
    try:
        steps = runner.run(connection, log, stop_after=stop_after)
    finally:
        tm.abort()
        connection.close()
    return runner, steps


def status(db, runner):
    """(version, target, reached, pending) of ``db`` for ``runner``."""
    import transaction
    tm = transaction.TransactionManager()
    connection = db.open(transaction_manager=tm)
    try:
        root = connection.root()
        return dict(version=runner.version(root), target=runner.target(),
                    reached=runner.reached(root),
                    pending=runner.pending(root))
    finally:
        tm.abort()
        connection.close()
