"""python -m collective.safedeploy.ansible: see command.py."""
import sys

from .command import main

sys.exit(main())
