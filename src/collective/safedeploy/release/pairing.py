"""Which release ran on which data: the one pairing record.

Code and data move separately (a release flips ``current``; bin/evolve-copy
and a restore flip the data's ``current``), so what belongs together is
written down, in one journal beside the releases (``releases/.pairing``),
one ``paired`` entry each time it changes:

``release``
    the release tag;
``generation``
    the data generation it runs on from now on (or ran on, for a
    snapshot entry);
``snapshot``
    a snapshot holding that release's data as it was when the release was
    left (taken just before the next release was flipped in);
``via``
    what made the pair: ``publish`` (a release flipped in on the data
    that was current), ``evolve-copy`` (the data switched to an evolved
    copy for the release), ``snapshot-before-flip``, ``rollback``,
    ``restore``, ``switch-back``;
``last_tid``, ``backend``
    what the snapshot holds, when there is one.

:func:`record` is the only writer, :func:`lookup` the only reader.
"""
import collections
import os

from ..core.journal import Journal

FILE = '.pairing'

Pair = collections.namedtuple('Pair', 'release generation snapshot via entry')


def journal(releases_directory):
    return Journal(os.path.join(releases_directory, FILE))


def record(releases_directory, release, via, generation=None, snapshot=None,
           **fields):
    """Write down that ``release`` runs (ran) on ``generation`` / that
    ``snapshot`` holds its data."""
    if not releases_directory or not release or not os.path.isdir(
            releases_directory) or not (generation or snapshot):
        return None
    return journal(releases_directory).append(
        'paired', release=release, generation=generation, snapshot=snapshot,
        via=via, **fields)


def entries(releases_directory, strict=True):
    if not releases_directory:
        return []
    return [Pair(e.get('release'), e.get('generation'), e.get('snapshot'),
                 e.get('via'), e)
            for e in journal(releases_directory).entries(strict)
            if e['event'] == 'paired']


def lookup(releases_directory, release, order=()):
    """What the record says of ``release``: ``(generation, snapshot,
    later_evolved)`` -- the data generation it last ran on, the newest
    snapshot of its data (its pairing entry), and whether bin/evolve-copy
    switched the data for another release after it last ran.

    A release with no generation of its own on record (it ran before the
    data was in generations) ran on the generation the first evolve-copy
    for a release after it (in ``order``, the order releases were built)
    was made from."""
    pairs = entries(releases_directory)
    generation = snapshot = None
    last = -1
    for i, pair in enumerate(pairs):
        if pair.release != release:
            continue
        if pair.snapshot:
            snapshot = pair
        if pair.generation and not pair.snapshot:
            generation, last = pair.generation, i
    if generation is None and release in order:
        later = set(order[order.index(release) + 1:])
        for pair in pairs:
            if pair.via == 'evolve-copy' and pair.release in later and \
                    pair.entry.get('source'):
                return pair.entry['source'], snapshot, True
        return None, snapshot, False
    later_evolved = any(p.via == 'evolve-copy' and p.release != release
                        for p in pairs[last + 1:])
    return generation, snapshot, later_evolved


def generations_in_use(releases_directory, releases):
    """The data generations the given releases last ran on."""
    result = set()
    for release in releases:
        generation, _, _ = lookup(releases_directory, release)
        if generation:
            result.add(generation)
    return result
