"""The data schema, evolved in the repoze.evolution layout.

The database records the schema it is at in
``root['repoze.evolution']['demoapp.evolve']``; module ``evolveN`` takes it
from N-1 to N, one committed step each.  ``VERSION`` is the schema this
code reads and writes: the application refuses to write to a database at
any other schema (run the evolve first, or roll back with the data).
"""
VERSION = 0
KEY = 'demoapp.evolve'
