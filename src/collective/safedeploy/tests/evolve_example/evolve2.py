"""Step 2 of the example evolve: see model.upper_bodies."""
from .model import upper_bodies
from .model import step_hook


def evolve(site):
    step_hook(2)
    upper_bodies(site)
