"""The ZEO server's port stays open across evolve-copy's restarts: a ZEO
client whose connect is refused waits 1 s plus up to 1 s before it tries
again (ZEO.asyncio.client), so a closed port would cost every client
reconnecting at the switch that second on top of the read-only window."""
import os
import re
import signal
import socket
import threading
import time

from collective.safedeploy.zeo import server as zeoserver
from collective.safedeploy.tests.test_evolve_writes import WriterTestCase

# well below ZEO's reconnect delay after a refused connect (1 s at least)
REFUSAL_MARGIN = 0.5


def listening_inodes(port):
    """The inodes of the sockets listening on TCP ``port`` (/proc/net/tcp:
    state 0A is LISTEN)."""
    found = set()
    with open('/proc/net/tcp') as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].split(':')[1], 16) == port and \
                    fields[3] == '0A':
                found.add(int(fields[9]))
    return found


class Probe:
    """A thread watching the port every millisecond or so: the listening
    sockets on it (inodes), and connects refused."""

    def __init__(self, address):
        self.address = address
        self.inodes = []        # (time, set of inodes), when it changes
        self.refused = []
        self.connected = 0
        self._stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        last = None
        i = 0
        while not self._stop:
            inodes = listening_inodes(self.address[1])
            if inodes != last:
                self.inodes.append((time.monotonic(), inodes))
                last = inodes
            i += 1
            if i % 10 == 0:     # a connect every 10th look: small backlog
                c = socket.socket()
                c.settimeout(5)
                try:
                    c.connect(self.address)
                    self.connected += 1
                except ConnectionRefusedError:
                    self.refused.append(time.monotonic())
                except OSError:
                    pass
                finally:
                    c.close()
            time.sleep(0.001)

    def stop(self):
        self._stop = True
        self.thread.join()


class ListeningSocketTests(WriterTestCase):

    def probe(self):
        probe = Probe(self.server.zeo.address)
        self.addCleanup(probe.stop)
        return probe

    def test_no_reconnect_delay_across_the_switch(self):
        # a writer (a real ZEO client) commits throughout; the thaw is a
        # restart onto the evolved copy.  The port never closes: one
        # listening socket, the same, all along, no connect refused, and
        # the writer's longest refusal is the window plus its own retry --
        # not plus ZEO's reconnect delay
        port = self.server.zeo.address[1]
        before = listening_inodes(port)
        self.assertEqual(len(before), 1)
        w = self.writer()
        probe = self.probe()
        code, out = self.evolve_copy()
        self.assertEqual(code, 0, out)
        self.assertTrue(w.wait_acknowledged(3), 'not writable after the run')
        probe.stop()
        log = w.stop()
        self.assertEqual(self.data.current(), '2')
        self.assert_acknowledged_in(log)
        self.assertEqual([inodes for _, inodes in probe.inodes], [before],
                         'the listening socket changed or closed')
        self.assertEqual(probe.refused, [])
        self.assertGreater(probe.connected, 0)
        window = float(re.search(r'read-only window: ([\d.]+) s',
                                 out).group(1))
        refused = log.longest_refusal()
        self.assertGreater(refused, 0.0, 'the writer was never refused')
        self.assertLess(refused, window + REFUSAL_MARGIN, (
            'writer refused %.3f s, window %.3f s' % (refused, window), out))

    def test_server_killed_after_the_handover(self):
        # the restart took the listening socket; the old server dies by
        # SIGKILL (or is stopped) before the next one serves: the port
        # stays open, a client connecting meanwhile is not refused and
        # is served as soon as the next server runs
        zeo = self.server.zeo
        port = zeo.address[1]
        before = listening_inodes(port)
        process = zeo.prepare()
        self.addCleanup(lambda: process.poll() is None and (
            process.kill(), process.wait()))
        zeo.wait_ready(process)
        listener = zeo.take_listener()
        self.assertIsNotNone(listener)
        self.addCleanup(listener.close)
        pid = zeo.pid()
        os.kill(pid, signal.SIGKILL)
        while zeoserver.alive(pid):
            time.sleep(0.002)
        self.assertEqual(listening_inodes(port), before)
        probe = self.probe()
        connected = {}

        def client():
            from ZEO.ClientStorage import ClientStorage
            storage = ClientStorage(zeo.address, wait_timeout=30)
            connected['at'] = time.monotonic()
            connected['tid'] = storage.lastTransaction()
            storage.close()
        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        time.sleep(0.3)                 # it connects while nobody serves
        self.assertNotIn('at', connected)
        started = time.monotonic()
        current = self.data.current()
        zeo.start(self.data.fs(current), self.data.blobs(current),
                  process=process, listener=listener)
        serving = time.monotonic()
        thread.join(30)
        probe.stop()
        self.assertIn('at', connected)
        self.assertLess(connected['at'] - serving, REFUSAL_MARGIN,
                        'start took %.3f s' % (serving - started))
        self.assertEqual(probe.refused, [])
        self.assertEqual([inodes for _, inodes in probe.inodes], [before])

    def test_restarting_command_killed_holding_the_socket(self):
        # the command restarting the server dies (SIGKILL) between taking
        # the socket and handing it on, after the old server stopped:
        # nobody listens -- as before, until the guard restarts the server
        # -- and the next start binds the port again, with no leftover
        zeo = self.server.zeo
        port = zeo.address[1]
        listener = zeo.take_listener()
        self.assertIsNotNone(listener)
        zeo.stop(handed_over=True)
        self.assertTrue(listening_inodes(port))
        listener.close()                # what its death does
        self.assertEqual(listening_inodes(port), set())
        self.assertFalse(zeoserver.listening(zeo.address))
        current = self.data.current()
        zeo.start(self.data.fs(current), self.data.blobs(current))
        self.assertEqual(len(listening_inodes(port)), 1)
        w = self.writer()
        self.assertTrue(w.wait_acknowledged(2))
        self.assert_acknowledged_in(w.stop())

    def test_a_second_server_cannot_start_on_the_socket(self):
        # a process manager starting the server again while it runs, or
        # while a restart holds its socket, is refused: never two servers
        zeo = self.server.zeo
        other = zeoserver.ZEOServer(zeoserver.format_address(zeo.address),
                                    os.path.join(self.dir, 'other-state'))
        current = self.data.current()
        with self.assertRaisesRegex(zeoserver.ServerError, 'listens'):
            other.start(self.data.fs(current), self.data.blobs(current))
        listener = zeo.take_listener()
        self.addCleanup(listener.close)
        zeo.stop(handed_over=True)
        with self.assertRaisesRegex(zeoserver.ServerError, 'listens'):
            other.start(self.data.fs(current), self.data.blobs(current))
