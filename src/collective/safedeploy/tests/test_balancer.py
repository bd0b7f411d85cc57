"""collective.safedeploy.balancer against a real HAProxy and a real nginx on
loopback."""
import http.server
import os
import threading
import time
import unittest
import urllib.request

from collective.safedeploy import balancer
from collective.safedeploy.balancer import haproxy
from . import haproxysupport
from . import nginxsupport


IN_FLIGHT = []           # the names of servers answering a slow request


def wait_in_flight(test, timeout=10):
    """Until a slow request reached its server (nginx has no count)."""
    deadline = time.monotonic() + timeout
    while not IN_FLIGHT:
        test.assertLess(time.monotonic(), deadline)
        time.sleep(0.01)


class Named(http.server.ThreadingHTTPServer):
    daemon_threads = True


def serve(test, name):
    """An HTTP server answering its name; /slow waits 1.5 s first, /slower
    5 s."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            delay = {'/slow': 1.5, '/slower': 5}.get(self.path)
            if delay:
                IN_FLIGHT.append(name)
                time.sleep(delay)
                IN_FLIGHT.remove(name)
            body = name.encode()
            self.send_response(200)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = Named(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()
    test.addCleanup(stop)
    return server.server_address[1]


def get(url, path='/'):
    with urllib.request.urlopen(url + path, timeout=10) as r:
        return r.read().decode()


class HAProxyBalancerTests(unittest.TestCase):

    def setUp(self):
        ports = {n: serve(self, n) for n in ('main1', 'main2', 'twin1')}
        self.proxy = haproxysupport.HAProxy(self, [
            ('main1', ports['main1'], True),
            ('main2', ports['main2'], True),
            ('twin1', ports['twin1'], False)], backend='beta')
        self.lb = balancer.open(self.proxy.spec)

    def served_by(self, n=6):
        return {get(self.proxy.url) for _ in range(n)}

    def test_read_back_the_configured_state(self):
        servers = self.lb.servers()
        self.assertEqual(sorted(servers), ['main1', 'main2', 'twin1'])
        self.assertEqual(servers['main1'].admin, balancer.READY)
        self.assertEqual(servers['twin1'].admin, balancer.MAINT)
        self.assertTrue(servers['main1'].idle)
        self.assertEqual(self.served_by(), {'main1', 'main2'})

    def test_switch_waits_for_in_flight_requests_and_survives_a_reload(self):
        slow = []
        t = threading.Thread(
            target=lambda: slow.append(get(self.proxy.url, '/slow')))
        t.start()
        self.addCleanup(t.join)
        deadline = time.monotonic() + 5
        while all(s.idle for s in self.lb.servers().values()):
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)
        started = time.monotonic()
        self.assertTrue(self.lb.switch(['twin1'], ['main1', 'main2'],
                                       timeout=10))
        waited = time.monotonic() - started
        t.join()
        # the in-flight request finished on its old server, before maint
        self.assertIn(slow[0], ('main1', 'main2'))
        self.assertGreater(waited, 0.5)
        self.assertEqual(self.served_by(), {'twin1'})
        states = {n: s.admin for n, s in self.lb.servers().items()}
        self.assertEqual(states, {'main1': 'maint', 'main2': 'maint',
                                  'twin1': 'ready'})
        # saved after each change: a restarted HAProxy comes back so
        with open(self.proxy.state_file) as f:
            saved = haproxy.parse_servers_state(f.read())
        self.assertEqual(haproxy.admin_state(int(
            saved[('beta', 'twin1')]['srv_admin_state'])), 'ready')
        self.proxy.restart()
        self.assertEqual(self.served_by(), {'twin1'})
        self.assertTrue(self.lb.switch(['main1', 'main2'], ['twin1']))
        self.assertEqual(self.served_by(), {'main1', 'main2'})

    def test_drain_timeout_is_reported(self):
        t = threading.Thread(target=get, args=(self.proxy.url, '/slow'))
        t.start()
        self.addCleanup(t.join)
        time.sleep(0.3)
        busy = [n for n, s in self.lb.servers().items() if not s.idle]
        self.assertEqual(len(busy), 1)
        self.lb.set_state(busy[0], balancer.DRAIN)
        self.assertEqual(self.lb.state(busy[0]).admin, balancer.DRAIN)
        self.assertFalse(self.lb.wait_drained(busy, timeout=0.2))
        self.assertTrue(self.lb.wait_drained(busy, timeout=5))

    def test_mistakes_are_one_line(self):
        with self.assertRaisesRegex(balancer.BalancerError,
                                    "has no server 'nope'"):
            self.lb.set_state('nope', balancer.READY)
        with self.assertRaisesRegex(balancer.BalancerError,
                                    'unknown server state'):
            self.lb.set_state('main1', 'sleepy')
        other = balancer.open(self.proxy.spec.replace('backend=beta',
                                                      'backend=gamma'))
        with self.assertRaisesRegex(balancer.BalancerError,
                                    'no such backend'):
            other.servers()
        gone = balancer.open('haproxy:%s backend=beta' %
                             os.path.join(self.proxy.directory, 'no.sock'))
        with self.assertRaisesRegex(balancer.BalancerError,
                                    'cannot talk to HAProxy'):
            gone.servers()
        for spec, message in [('caddy:/x', 'unknown kind'),
                              ('haproxy', 'KIND:ADDRESS'),
                              ('haproxy:rel.sock backend=b', 'absolute'),
                              ('haproxy:/x.sock', 'backend=NAME'),
                              ('haproxy:/x.sock backend=b color=red',
                               'unknown option'),
                              ('haproxy:/x.sock backend', 'key=value')]:
            with self.assertRaisesRegex(balancer.BalancerError, message):
                balancer.open(spec)


class NginxBalancerTests(unittest.TestCase):

    def setUp(self):
        ports = {n: serve(self, n) for n in ('main1', 'main2', 'twin1')}
        self.proxy = nginxsupport.Nginx(self, [
            ('main1', ports['main1'], True),
            ('main2', ports['main2'], True),
            ('twin1', ports['twin1'], False)], upstream='beta')
        self.lb = balancer.open(self.proxy.spec)

    def served_by(self, n=6):
        return {get(self.proxy.url) for _ in range(n)}

    def test_read_back_the_configured_state(self):
        servers = self.lb.servers()
        self.assertEqual(sorted(servers), ['main1', 'main2', 'twin1'])
        self.assertEqual(servers['main1'].admin, balancer.READY)
        self.assertEqual(servers['twin1'].admin, balancer.MAINT)
        self.assertTrue(all(s.idle for s in servers.values()))
        self.assertEqual(self.served_by(), {'main1', 'main2'})

    def test_switch_waits_for_in_flight_requests_and_survives_a_restart(self):
        slow = []
        t = threading.Thread(
            target=lambda: slow.append(get(self.proxy.url, '/slow')))
        t.start()
        self.addCleanup(t.join)
        wait_in_flight(self)
        started = time.monotonic()
        self.assertTrue(self.lb.switch(['twin1'], ['main1', 'main2'],
                                       timeout=10))
        waited = time.monotonic() - started
        t.join()
        # the in-flight request finished on its old server (its old
        # worker), before the switch returned
        self.assertIn(slow[0], ('main1', 'main2'))
        self.assertGreater(waited, 0.5)
        self.assertEqual(self.served_by(), {'twin1'})
        states = {n: s.admin for n, s in self.lb.servers().items()}
        self.assertEqual(states, {'main1': 'maint', 'main2': 'maint',
                                  'twin1': 'ready'})
        # the file is the state: a restarted nginx comes back so
        self.proxy.restart()
        self.assertEqual(self.served_by(), {'twin1'})
        self.assertTrue(self.lb.switch(['main1', 'main2'], ['twin1']))
        self.assertEqual(self.served_by(), {'main1', 'main2'})

    def test_drain_timeout_is_reported(self):
        # long enough to be in flight after the reload, on a busy machine
        t = threading.Thread(target=get, args=(self.proxy.url, '/slower'))
        t.start()
        self.addCleanup(t.join)
        wait_in_flight(self)
        self.lb.set_state('main1', balancer.DRAIN)
        self.assertEqual(self.lb.state('main1').admin, balancer.DRAIN)
        self.assertFalse(self.lb.wait_drained(['main1'], timeout=0.2))
        self.assertTrue(self.lb.wait_drained(['main1'], timeout=10))

    def test_a_file_nginx_refuses_is_put_back_in_one_line(self):
        with open(self.proxy.file) as f:
            before = f.read()
        bad = balancer.open(self.proxy.spec.replace(
            'twin1=127.0.0.1:', 'twin1=127.0.0.1:x'))
        with self.assertRaisesRegex(balancer.BalancerError,
                                    r'nginx -t refused .* \(put back as it '
                                    r'was\): .*invalid port') as caught:
            bad.set_state('twin1', balancer.READY)
        self.assertNotIn('\n', str(caught.exception))
        with open(self.proxy.file) as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(self.served_by(), {'main1', 'main2'})

    def test_mistakes_are_one_line(self):
        with self.assertRaisesRegex(balancer.BalancerError,
                                    "has no server 'nope'"):
            self.lb.set_state('nope', balancer.READY)
        missing = balancer.open(self.proxy.spec.replace(
            self.proxy.file, self.proxy.file + '.nope'))
        with self.assertRaisesRegex(balancer.BalancerError,
                                    'does not exist; write it once'):
            missing.servers()
        for spec, message in [
                ('nginx:rel.conf upstream=b servers=a=1:2', 'absolute'),
                ('nginx:/x.conf servers=a=1:2', 'upstream=NAME'),
                ('nginx:/x.conf upstream=b', 'servers=NAME=HOST:PORT'),
                ('nginx:/x.conf upstream=b servers=a', 'NAME=HOST:PORT'),
                ('nginx:/x.conf upstream=b servers=a=1:2 color=red',
                 'unknown option')]:
            with self.assertRaisesRegex(balancer.BalancerError, message):
                balancer.open(spec)


class ParseTests(unittest.TestCase):

    def test_admin_state_bits(self):
        self.assertEqual(haproxy.admin_state(0), 'ready')
        self.assertEqual(haproxy.admin_state(0x08), 'drain')
        self.assertEqual(haproxy.admin_state(0x01), 'maint')
        self.assertEqual(haproxy.admin_state(0x04 | 0x01), 'maint')
        self.assertEqual(haproxy.admin_state(0x04), 'ready')
