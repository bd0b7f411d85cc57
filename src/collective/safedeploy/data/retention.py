"""Which data generations are kept, and why: what pruning never removes
(the current one, one a kept release ran on, one a process has open, one
holding writes a rollback or restore discarded) and the listing that
says so (``bin/snapshot --list --generations``)."""
import logging
import os

from ..core.store import Store
from .layout import lock_held

logger = logging.getLogger('collective.safedeploy')


def protected(root, releases=None, discard_writes=False):
    """{generation: why it is never pruned}: the current one, one a
    process has open, one a release still in ``releases`` last ran on
    (the previous good release's among them: a rollback finds its
    data), one holding writes a rollback or restore discarded (unless
    ``discard_writes``)."""
    gens = root.generations
    reasons = {}
    current = gens.current_name()
    if current:
        reasons[current] = 'current'
    for name, tags in release_generations(releases).items():
        reasons.setdefault(name, 'release %s ran on it' % ', '.join(
            sorted(tags)))
    for name in gens.on_disk(strict=False):
        if name in reasons:
            continue
        if any(lock_held(fs) for fs, _ in root.file_storages(
                gens.path(name))):
            reasons[name] = 'in use (a process holds its Data.fs.lock)'
            continue
        writes = writes_only_in(gens, name)
        if writes and not discard_writes:
            reasons[name] = ('holds %d transaction(s) a rollback or '
                             'restore discarded' % writes)
    return reasons


def prune(root, keep, releases=None, discard_writes=False, dry_run=False):
    """Keep at most ``keep`` data generations (0: keep all): failed and
    killed copies go first, then the oldest complete ones -- never one
    :func:`protected` names, the previous good one nor the newest one
    (:meth:`~collective.safedeploy.core.store.Store.prune`).  Call
    under the root's lock.  Returns the names removed (would be, with
    ``dry_run``)."""
    if not keep:
        return []
    gens = root.generations
    removed = gens.prune(keep, protect=protected(
        root, releases, discard_writes), dry_run=dry_run)
    # said by the caller, once: bin/snapshot --prune prints them,
    # bin/evolve-copy says them, a restore logs them
    for name in [] if dry_run else removed:
        logger.debug('pruned data generation %s (more than '
                     'keep-generations=%d)', name, keep)
    return removed


def listing(root, keep, releases=None, sizes=True):
    """One dict per data generation on disk, oldest first: what it
    holds (made by, from, release, last transaction, size) and why it
    is kept (``kept``; None: the next prune removes it)."""
    from .backends.base import disk_usage
    gens = root.generations
    protected_ = protected(root, releases)
    goes = set(prune(root, keep, releases, dry_run=True))
    current = gens.current_name()
    previous = gens.previous_good(current) if current else None
    good = gens.good()
    info = {}
    for entry in gens.journal.entries(strict=False):
        if entry.get('event') == 'started' and entry.get('name'):
            info[entry['name']] = entry
    rows = []
    for row in gens.history(strict=False):
        name = row['name']
        if not name or not row['exists']:
            continue
        try:
            manifest = gens.manifest(name) or {}
        except Exception:
            manifest = {}
        started = info.get(name, {})
        storages = manifest.get('storages') or []
        made = ('adopt' if 'adopted_from' in started else
                'new site' if started.get('created') else
                'evolve-copy' if started.get('evolve') else
                'restore' if started.get('snapshot') else 'copy')
        if name in goes:
            kept = None
        elif row['state'] == 'damaged':
            kept = 'damaged (never removed by collective.safedeploy)'
        elif name in protected_:
            kept = protected_[name]
        elif name == previous:
            kept = 'previous good generation'
        elif good and name == good[-1]:
            kept = 'newest generation'
        elif not keep:
            kept = 'keep-generations = 0 (keep all)'
        else:
            kept = 'within keep-generations=%d' % keep
        result = dict(
            name=name, current=row['current'], state=row['state'],
            built=row['built'], made=made,
            source=manifest.get('source') and os.path.basename(
                str(manifest['source'])) or started.get('source') and
            os.path.basename(str(started['source'])),
            snapshot=started.get('snapshot'),
            release=manifest.get('release') or started.get('release'),
            last_tid=manifest.get('switch_tid') or (
                storages[0].get('last_tid') if storages else None),
            discarded_writes=writes_only_in(gens, name),
            kept=kept)
        if sizes:
            result['size'], result['holds'] = disk_usage(gens.path(name))
        rows.append(result)
    return rows


def writes_only_in(generations, name):
    """How many transactions data generation ``name`` holds that the data
    made current after it does not: what a restore or switch-back that
    left ``name`` discarded (and kept there), as the journal recorded it
    the last time ``current`` moved away from ``name``.  0 when it left
    nothing behind (an evolve-copy carries every write into its copy).

    The one test of whether a generation holds writes a rollback would
    otherwise discard (pruning keeps such a generation unless told to
    discard them)."""
    count = 0
    for entry in generations.journal.entries(strict=False):
        if entry.get('event') == 'published' and \
                entry.get('previous') == name:
            count = entry.get('discarded') or entry.get(
                'discarded_writes') or 0
    return count if isinstance(count, int) else 0


def release_generations(releases):
    """{data generation: [release tags]}: the generation each release still
    in ``releases`` (a releases directory, in a good state or unchecked)
    last ran on, from the pairing record.  A rollback to one of them finds
    its data there."""
    if not releases or not os.path.isdir(releases):
        return {}
    from ..core.store import GOOD
    from ..core.store import RELEASE
    from ..core.store import UNCHECKED
    from ..release import pairing
    store = Store(releases, RELEASE)
    states = store.states(strict=False)
    order = store.order(strict=False)
    result = {}
    for tag in store.on_disk(strict=False):
        if states.get(tag) not in GOOD + (UNCHECKED,):
            continue    # (unchecked: it ran, its gate cut short by a kill)
        generation, _, _ = pairing.lookup(releases, tag, order)
        if generation:
            result.setdefault(generation, []).append(tag)
    return result
