"""safedeploy-ansible: where the shipped playbooks and role are.

usage: safedeploy-ansible [--playbook NAME | --roles]
"""
from . import PLAYBOOKS
from . import path
from ..core import cli


def parser(prog='safedeploy-ansible'):
    p = cli.parser(prog, 'Print the directory of the Ansible playbooks '
                   '(rollout.yml, state.yml) and role (roles/safedeploy) '
                   'shipped with collective.safedeploy.')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--playbook', choices=[n[:-4] for n in PLAYBOOKS],
                   help='print the path of this playbook instead')
    g.add_argument('--roles', action='store_true',
                   help='print the roles directory (for ANSIBLE_ROLES_PATH)')
    return p


def show(args):
    if args.playbook:
        print(path(args.playbook + '.yml'))
    elif args.roles:
        print(path('roles'))
    else:
        print(path())
    return 0


def main(argv=None):
    args = parser().parse_args(argv)
    return cli.run('safedeploy-ansible', show, args)
