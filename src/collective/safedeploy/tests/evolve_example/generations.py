"""The example evolve as a zope.generations schema manager
(``evolve = collective.safedeploy.tests.evolve_example.generations:manager``).
"""
from .model import STEPS
from .model import step_hook


class SchemaManager:

    generation = 3
    minimum_generation = 3
    package_name = 'collective.safedeploy.tests.evolve_example'

    def install(self, context):
        pass

    def evolve(self, context, generation):
        step_hook(generation)
        STEPS[generation](context.connection.root()['site'])


manager = SchemaManager()
