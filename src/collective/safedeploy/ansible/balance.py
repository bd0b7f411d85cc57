"""safedeploy-balance: drain or ready one server on the balancer, for the
rollout playbook (run there with delegate_to).

usage: safedeploy-balance SPEC drain|ready SERVER [--timeout SECONDS]

SPEC names the balancer as the balancer interface does, e.g.
``haproxy:/run/haproxy/admin.sock backend=www state-file=PATH``.
``drain`` takes the server out of load balancing, waits until its
in-flight requests finished, then puts it into maintenance (a drained
HAProxy server still takes persistent connections); ``ready`` puts it
back.
"""
import sys

from .. import balancer
from ..core import cli
from ..core.errors import Refused


def parser(prog='safedeploy-balance'):
    p = cli.parser(prog, 'Drain (and wait for) or ready one server of the '
                   'balancer in front of the clients.')
    p.add_argument('spec', type=cli.value,
                   help='the balancer: KIND:ADDRESS key=value ...')
    p.add_argument('action', choices=('drain', 'ready'))
    p.add_argument('server', type=cli.value, help='the server in the backend')
    p.add_argument('--timeout', type=float, default=60.0,
                   help='seconds to wait for in-flight requests (default 60)')
    return p


def act(spec, action, server, timeout):
    b = balancer.open(spec)
    b.state(server)                  # an unknown server: one line
    if action == 'ready':
        b.set_state(server, balancer.READY)
        print('%s: %s ready' % (b.describe(), server))
        return 0
    if b.state(server).admin == balancer.READY:
        b.set_state(server, balancer.DRAIN)
    if not b.wait_drained([server], timeout):
        raise Refused('%s still has requests in flight after %ss; it is '
                      'left draining' % (server, timeout))
    b.set_state(server, balancer.MAINT)
    print('%s: %s drained' % (b.describe(), server))
    return 0


def main(argv=None):
    args = parser().parse_args(argv)
    cli.setup_logging(args.verbose, args.quiet)
    return cli.run('safedeploy-balance', act, args.spec, args.action,
                   args.server, args.timeout)


if __name__ == '__main__':
    sys.exit(main())
