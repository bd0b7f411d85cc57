"""Step 1 of the example evolve: see model.strip_titles."""
from .model import strip_titles
from .model import step_hook


def evolve(site):
    step_hook(1)
    strip_titles(site)
