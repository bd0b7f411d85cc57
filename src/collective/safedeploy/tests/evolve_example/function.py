"""The example evolve as ``module:function(root, commit)``
(``evolve = collective.safedeploy.tests.evolve_example.function:evolve``);
it resumes by reading what it did from ``site.done``."""
from .model import STEPS
from .model import step_hook


def evolve(root, commit):
    site = root['site']
    for n in sorted(STEPS):
        if n <= getattr(site, 'done', 0):
            continue
        step_hook(n)
        STEPS[n](site)
        site.done = n
        commit('step %d' % n)


def noop(root, commit):
    """An evolve that changes nothing (``...function:noop``), to measure
    what the procedure itself costs."""
