"""The Ansible role and playbooks shipped with collective.safedeploy.

``python -m collective.safedeploy.ansible`` (or ``safedeploy-ansible``)
prints the directory holding ``rollout.yml``, ``state.yml`` and
``roles/safedeploy``.
"""
import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))
PLAYBOOKS = ('rollout.yml', 'state.yml')


def path(*parts):
    """The shipped playbook directory, or a file in it."""
    return os.path.join(DIRECTORY, *parts)
