"""Going back to the data generation an evolve-copy switched away from:
writes since the switch are counted, refused unless discarded, and ZEO
clients whose persistent cache is newer are restarted without it."""
import glob
import os
import subprocess
import sys
import textwrap
import time
from collective.safedeploy.evolve import switchback
from collective.safedeploy.core.errors import Refused
from collective.safedeploy.tests import zeosupport
from collective.safedeploy.tests.test_evolve_copy import EvolveCopyTestCase

CACHED_CLIENT = textwrap.dedent('''\
    import sys, transaction, ZODB
    from ZEO.ClientStorage import ClientStorage
    host, port = sys.argv[1].rsplit(':', 1)
    try:
        storage = ClientStorage((host, int(port)), client='app',
                                var=sys.argv[2], blob_dir=sys.argv[2] + '/b',
                                wait_timeout=float(sys.argv[4]))
    except Exception as e:
        open(sys.argv[3], 'w').write('refused %s' % type(e).__name__)
        sys.exit(1)
    db = ZODB.DB(storage)
    conn = db.open()
    docs = conn.root()['site'].documents
    open(sys.argv[3], 'w').write('connected %d %s' % (
        len(docs), docs[1].title))
    db.close()
    ''')


class RollbackTests(EvolveCopyTestCase):

    def switch(self):
        code, out = self.evolve_copy()
        self.assertEqual(code, 0, out)
        self.assertEqual(self.data.current(), '2')

    def test_writes_since_the_switch_are_counted_and_refused(self):
        self.switch()
        self.assertEqual(switchback.writes_since_switch(self.data), 0)
        client = zeosupport.Client(self.server.address)
        self.addCleanup(client.stop)
        client.ask('wait writable')
        for i in range(2):
            self.assertTrue(client.ask('write').startswith('ok'))
        self.assertEqual(switchback.writes_since_switch(self.data.path), 2)
        with self.assertRaises(Refused) as e:
            switchback.switch_data_back(self.data, '1', self.server.control)
        self.assertIn('2 transactions were committed in data generation 2',
                      str(e.exception))
        self.assertIn('--discard-writes', str(e.exception))
        self.assertEqual(self.data.current(), '2')
        result = switchback.switch_data_back(
            self.data, '1', self.server.control, discard_writes=True)
        self.assertEqual(result, dict(previous='2', current='1',
                                      discarded=2))
        self.assertEqual(self.data.current(), '1')
        self.assertTrue(self.data.generations.is_complete('2'))  # kept
        entry = self.journal('rolled-back')[-1]
        # the generation left, where the data went
        self.assertEqual((entry['name'], entry['to'],
                          entry['discarded_writes']), ('2', '1', 2))
        self.assertEqual(self.site()[1], (' title 1 ', b'body of 1'))

    def test_without_writes_no_discard_needed(self):
        self.switch()
        switchback.switch_data_back(self.data, '1', self.server.control)
        self.assertEqual(self.data.current(), '1')

    def test_clients_with_a_newer_cache_are_restarted_without_it(self):
        var = os.path.join(self.dir, 'client-var')
        os.makedirs(os.path.join(var, 'b'))
        script = os.path.join(self.dir, 'client.py')
        with open(script, 'w') as f:
            f.write(CACHED_CLIENT)
        result = os.path.join(self.dir, 'client-result')

        def client(timeout='20'):
            if os.path.exists(result):
                os.unlink(result)
            subprocess.run([sys.executable, script, self.server.address,
                            var, result, timeout],
                           stderr=subprocess.DEVNULL)
            with open(result) as f:
                return f.read()

        self.switch()
        # the application writes on the evolved data: its persistent cache
        # now knows transactions the old generation never had
        writer = zeosupport.Client(self.server.address)
        writer.ask('wait writable')
        writer.ask('write')
        writer.stop()
        self.assertEqual(client(), 'connected %d title 1' % (
            self.documents + 4))
        self.assertTrue(glob.glob(os.path.join(var, '*.zec')))
        # back to generation 1 without the hooks: the client refuses it
        switchback.switch_data_back(self.data, '1', self.server.control,
                                    discard_writes=True)
        started = time.monotonic()
        self.assertEqual(client(timeout='3'), 'refused ClientDisconnected')
        self.assertGreater(time.monotonic() - started, 2)
        # with the hooks: clients stopped, caches dropped, started again
        switchback.switch_data_back(self.data, '2', self.server.control,
                                    discard_writes=True)
        self.assertTrue(client().startswith('connected'))
        start = '%s %s %s %s %s 20' % (sys.executable, script,
                                       self.server.address, var, result)
        switchback.switch_data_back(
            self.data, '1', self.server.control, discard_writes=True,
            client_stop_command='true',
            client_caches=[os.path.join(var, '*.zec')],
            client_start_command=start)
        with open(result) as f:
            self.assertEqual(f.read(), 'connected %d  title 1 ' % (
                self.documents + 3))
