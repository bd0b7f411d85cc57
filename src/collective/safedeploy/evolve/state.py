"""Where evolve-copy keeps its work: the data root's generations, one
FileStorage each, and the state of a run in the copy it works on.

``safedeploy-evolve.json`` in the copy says how far a run got, so that a
killed or failed run can be resumed (:func:`find_resumable`) and the
report ``safedeploy-evolve-report.txt`` says why it stopped.
"""
import os

from ..core import fsutil
from ..core.errors import NotFound
from ..core.errors import Refused
from ..data import layout

FS = os.path.join('filestorage', 'Data.fs')
BLOBS = 'blobstorage'
STATE = 'safedeploy-evolve.json'
REPORT = 'safedeploy-evolve-report.txt'


class DataRoot(layout.DataRoot):
    """The data root of :mod:`~collective.safedeploy.data.layout`, seen by
    evolve-copy: one FileStorage (``filestorage/Data.fs``) and its blobs
    per generation."""

    def dir(self, name):
        return self.generations.path(name)

    def fs(self, name):
        return os.path.join(self.dir(name), FS)

    def blobs(self, name):
        return os.path.join(self.dir(name), BLOBS)

    def current(self):
        name = self.generations.current_name()
        if name is None:
            raise NotFound(
                'no data generation is current in %s (no %s link); make the '
                'first one with bin/snapshot --adopt' % (
                    self.path, self.generations.current))
        return name


def load_state(path):
    return fsutil.read_json_object(os.path.join(path, STATE))


def save_state(path, state):
    # advice to --resume about a copy that is disposable until the switch
    # (whose manifest and flip are durable): atomic, not fsynced -- after a
    # power failure --resume redoes a step or refuses, production untouched
    fsutil.atomic_write_json(os.path.join(path, STATE), state, durable=False)


def find_resumable(data, source, evolve_spec):
    """(name, state) of the copy a killed or failed run of ``evolve_spec``
    left, made from ``source``."""
    gens = data.generations
    states = gens.states()
    for name in reversed(sorted(
            (n for n in gens.on_disk() if n != source),
            key=lambda n: (len(n), n))):
        state = load_state(gens.path(name))
        if not state or state.get('evolve') != evolve_spec:
            continue
        if gens.is_complete(name) and not (
                state.get('phase') == 'verified' and
                states.get(name) == 'built'):
            continue   # an earlier run's, switched to or rolled back
        if state.get('source') != source:
            raise Refused(
                'the killed run copied data generation %s, but %s is '
                'current now; start a new run without --resume' % (
                    state.get('source'), source))
        return name, state
    raise NotFound('no killed or failed evolve-copy of %s to resume in '
                   '%s; run without --resume' % (evolve_spec, gens.directory))


def report(state, reason, times):
    lines = ['evolve-copy failed: %s' % reason,
             'source generation: %s' % state.get('source'),
             'evolve: %s' % state.get('evolve'),
             'last phase reached: %s' % state.get('failed_phase')]
    for step, seconds in times.items():
        lines.append('%s: %.3f s' % (step, seconds))
    for s in state.get('steps') or ():
        lines.append('committed step %(step)s: %(seconds)s s, %(objects)s '
                     'objects' % s)
    return '\n'.join(lines) + '\n'
