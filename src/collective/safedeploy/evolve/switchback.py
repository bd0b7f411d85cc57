"""Switching the data back to an older generation (what ``bin/rollback``
does for a release that ran on older data), and the writes that would
discard.
"""
import glob
import os

from ..core import commands
from ..core.errors import Refused
from ..data import filestorage
from .state import DataRoot

def writes_since_switch(data, name=None):
    """Transactions committed in data generation ``name`` (default: the
    current one) since it was switched to."""
    data = DataRoot(data) if isinstance(data, str) else data
    name = name or data.current()
    manifest = data.generations.manifest(name) or {}
    tid = filestorage.tid_bytes(manifest.get('switch_tid'))
    if tid is None:
        return None
    return filestorage.count_transactions_after(data.fs(name), tid)


def committed_tids(fs_path):
    """The ids of the committed transactions of a FileStorage file, read
    header by header (the file may be in use)."""
    return set(filestorage.transaction_tids(fs_path))


def evolve_intervals(data, name):
    """[(frozen_tid, switch_tid)] of the evolves along the chain of
    generations ``name`` was made from: the transactions an evolve-copy
    committed itself (none a client was told about).

    Each generation's manifest says where it was made from and what its
    evolve committed.  A generation pruned since took its manifest with
    it; the journal's record of its switch says the same
    (:func:`evolve_switches`), and the chain goes on through it."""
    switches = None
    intervals, seen = [], set()
    while name and name not in seen:
        seen.add(name)
        record = data.generations.manifest(name)
        if record is None:
            if switches is None:
                switches = evolve_switches(data)
            record = switches.get(name, {})
            if not record.get('frozen_tid'):
                record['frozen_tid'] = frozen_in_source(data, record)
        low = filestorage.tid_bytes(record.get('frozen_tid'))
        high = filestorage.tid_bytes(record.get('switch_tid'))
        if low is not None and high is not None:
            intervals.append((low, high))
        name = record.get('source')
    return intervals


def evolve_switches(data):
    """{generation: {source, frozen_tid, switch_tid}}: what the journal
    recorded of each switch bin/evolve-copy made; it outlives the
    generation's manifest when the generation is pruned."""
    switches = {}
    for entry in data.generations.journal.entries(strict=False):
        if entry.get('event') == 'published' and \
                entry.get('via') == 'evolve-copy' and entry.get('name'):
            switches[entry['name']] = dict(
                source=entry.get('source'),
                frozen_tid=entry.get('frozen_tid'),
                switch_tid=entry.get('switch_tid'))
    return switches


def frozen_in_source(data, switch):
    """The frozen transaction of a switch the journal recorded without it
    (before it kept it), from the source generation when that is still
    there: the newest transaction the source holds up to the switch.  The
    source was frozen until the switch and is written again only after
    it, so that is where the evolve's own transactions began."""
    source, switched = switch.get('source'), filestorage.tid_bytes(
        switch.get('switch_tid'))
    if not source or switched is None or not os.path.exists(
            data.fs(source)):
        return None
    held = [tid for tid in filestorage.transaction_tids(data.fs(source))
            if tid <= switched]
    return filestorage.tid_hex(max(held)) if held else None


def writes_lacking(data, current, target):
    """How many transactions clients committed in data generation
    ``current`` that ``target`` does not hold: compared by transaction id,
    so writes made in any generation of the chain between them count, not
    only those since the last switch.  The evolves' own transactions (the
    chain's manifests and, for a generation pruned since, the journal say
    which) do not."""
    data = DataRoot(data) if isinstance(data, str) else data
    lacking = committed_tids(data.fs(current)) - committed_tids(
        data.fs(target))
    intervals = evolve_intervals(data, current)
    return sum(1 for tid in lacking if not any(
        low < tid <= high for low, high in intervals))


def check_writes(data, current, target, discard_writes=False):
    """The number of writes going back from ``current`` to ``target``
    discards (:func:`writes_lacking`); refused when there are any, unless
    ``discard_writes``.  The one check: :func:`switch_data_back` makes it
    under the lock, ``bin/rollback --dry-run`` without."""
    writes = writes_lacking(data, current, target)
    if writes and not discard_writes:
        raise Refused(
            '%d transactions were committed in data generation %s that '
            'generation %s does not hold; going back to %s discards '
            'them: run again with --discard-writes (generation %s is '
            'kept)' % (writes, current, target, target, current))
    return writes


def drop_client_caches(patterns):
    """Remove ZEO clients' persistent cache files (``*.zec``): a client
    whose cache is newer than the database refuses it ("Server behind
    client")."""
    removed = []
    for pattern in patterns:
        for path in glob.glob(pattern):
            if path.endswith('.zec') or path.endswith('.zec.lock'):
                os.unlink(path)
                removed.append(path)
    return removed


def run_hook(args, what, **env):
    """A client command (stop or start the ZEO clients) around the switch."""
    if args:
        commands.run(args, what=what, env=dict(os.environ, **env))


def switch_data_back(data, target, control=None, discard_writes=False,
                     client_stop_command=None, client_start_command=None,
                     client_caches=()):
    """Make the older data generation ``target`` current again (what
    ``bin/rollback`` calls for a release paired with older data).

    Refuses when the current generation holds writes ``target`` lacks
    (:func:`check_writes`), unless ``discard_writes``; the abandoned
    generation is kept.  ZEO
    clients are stopped, their persistent caches dropped and started
    again around the server restart.
    """
    # split first: a bad command is refused before anything is done
    stop = commands.split(client_stop_command, 'client-stop-command')
    start = commands.split(client_start_command, 'client-start-command')
    data = DataRoot(data) if isinstance(data, str) else data
    gens = data.generations
    with gens.lock('an evolve-copy or rollback of %s' % data.path):
        current = data.current()
        target = gens.resolve(target)
        writes = check_writes(data, current, target, discard_writes)
        run_hook(stop, 'client-stop-command', SAFEDEPLOY_DATA=data.dir(target))
        drop_client_caches(client_caches)
        gens.journal.append('rolled-back', name=current, to=target,
                            discarded_writes=writes or 0)
        gens.flip(target, via='switch-back', left=current,
                  discarded_writes=writes or 0)
        if control is not None:
            control.thaw(data.dir(target))
        run_hook(start, 'client-start-command',
                 SAFEDEPLOY_DATA=data.dir(target))
    return dict(previous=current, current=target, discarded=writes or 0)


def _control(options):
    from ..zeo.control import make_control
    return make_control(options.get('zeo_address'), options.get('zeo_state'),
                        options.get('runzeo'), options.get('freeze_command'),
                        options.get('thaw_command'))


def switch_data_back_with(options, target, discard_writes=False):
    """:func:`switch_data_back` with the evolve-copy part's options (the
    keyword arguments of its bin/evolve-copy)."""
    return switch_data_back(
        options['data'], target, _control(options),
        discard_writes=discard_writes,
        client_stop_command=options.get('client_stop_command'),
        client_start_command=options.get('client_start_command'),
        client_caches=(options.get('client_cache') or '').split())


def thaw_on(options, generation):
    """Serve ``generation`` writable (after an undone switch back)."""
    control = _control(options)
    if control is not None:
        data = DataRoot(options['data'])
        control.thaw(data.dir(generation))
