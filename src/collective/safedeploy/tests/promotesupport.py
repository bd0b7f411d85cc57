"""A stage for the promote tests: a main set (ZEO server, two WSGI
clients) and a twin (ZEO address, one WSGI client) behind a real HAProxy,
a stages file, and a load generator sending reads and writes through
HAProxy."""
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

from collective.safedeploy import balancer
from collective.safedeploy.evolve import state
from collective.safedeploy.zeo import server as zeoserver
from . import haproxysupport
from . import zeosupport

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, 'promote_app.py')


def make_data(root):
    """``root/generations/1``, current, with an empty ``writes`` tree."""
    import transaction
    import ZODB
    from BTrees.OOBTree import OOBTree
    from ZODB.FileStorage import FileStorage
    data = state.DataRoot(root)
    data.generations.stage('1')
    os.makedirs(os.path.dirname(data.fs('1')))
    db = ZODB.DB(FileStorage(data.fs('1'), blob_dir=data.blobs('1')))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    conn.root()['writes'] = OOBTree()
    tm.commit()
    conn.close()
    db.close()
    data.generations.complete('1', dict(source='test'))
    data.generations.flip('1')
    return data


class Stage:

    def __init__(self, test, name='beta'):
        self.test = test
        self.name = name
        haproxysupport.skip_unless_haproxy(test)
        self.tmp = zeosupport.temporary_directory(test, 'safedeploy-stage-')
        self.root = os.path.join(self.tmp, name)
        self.twin = os.path.join(self.tmp, name + '_upgrade')
        self.stages = os.path.join(self.tmp, 'stages')
        self.main_data = make_data(os.path.join(self.root, 'data'))
        self.twin_data = state.DataRoot(os.path.join(self.twin, 'data'))
        self.zeo = '127.0.0.1:%d' % zeoserver.free_port()
        self.twin_zeo = '127.0.0.1:%d' % zeoserver.free_port()
        self.main_server = zeoserver.ZEOServer(
            self.zeo, os.path.join(self.root, 'var', 'safedeploy-zeo'))
        self.twin_server = zeoserver.ZEOServer(
            self.twin_zeo, os.path.join(self.twin, 'var', 'safedeploy-zeo'))
        fs = self.main_data.fs('1')
        self.main_server.start(fs, self.main_data.blobs('1'))
        test.addCleanup(self.main_server.stop)
        test.addCleanup(self.twin_server.stop)
        self.ports = {n: haproxysupport.free_port()
                      for n in ('main1', 'main2', 'twin1')}
        self.clients = {}
        for name_, port in self.ports.items():
            self.start_client(name_)
        self.proxy = haproxysupport.HAProxy(test, [
            ('main1', self.ports['main1'], True),
            ('main2', self.ports['main2'], True),
            ('twin1', self.ports['twin1'], False)], backend=name)
        self.balancer = balancer.open(self.proxy.spec)
        self.config = os.path.join(self.tmp, 'stages.cfg')
        self.write_config()
        for name_ in ('main1', 'main2'):
            self.wait_ok(name_)

    def write_config(self, **extra):
        body = textwrap.dedent('''\
            [stages]
            order = dev %(name)s

            [stage:%(name)s]
            root = %(root)s
            twin = %(twin)s
            balancer = %(spec)s
            servers = main1 main2
            twin-servers = twin1
            zeo = %(zeo)s
            twin-zeo = %(twin_zeo)s
            data-from = self
            check = http://127.0.0.1:%(main1)d/ok http://127.0.0.1:%(main2)d/ok
            twin-check = http://127.0.0.1:%(twin1)d/ok
            drain-timeout = 5
            check-timeout = %(check_timeout)s
            ''') % dict(name=self.name, root=self.root, twin=self.twin,
                        spec=self.proxy.spec, zeo=self.zeo,
                        twin_zeo=self.twin_zeo,
                        check_timeout=extra.pop('check_timeout', 10),
                        **self.ports)
        for key, value in extra.items():
            body += '%s = %s\n' % (key, value)
        with open(self.config, 'w') as f:
            f.write(body)

    def start_client(self, name):
        zeo = self.twin_zeo if name.startswith('twin') else self.zeo
        with open(os.path.join(self.tmp, name + '.log'), 'ab') as log:
            process = subprocess.Popen(
                [sys.executable, APP, str(self.ports[name]), zeo],
                stdout=subprocess.PIPE, stderr=log,
                env=zeoserver.child_env())
        assert process.stdout.readline().strip() == b'listening'
        self.clients[name] = process
        self.test.addCleanup(self.stop_client, name)

    def stop_client(self, name):
        process = self.clients.pop(name, None)
        if process is not None:
            zeosupport.kill(process)

    def logs(self):
        found = {}
        for n in self.ports:
            with open(os.path.join(self.tmp, n + '.log')) as f:
                found[n] = f.read()[-2000:]
        return found

    def wait_ok(self, name, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen('http://127.0.0.1:%d/ok' %
                                            self.ports[name], timeout=2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError('%s did not answer /ok' % name)

    def command(self, *args):
        return [sys.executable, '-m', 'collective.safedeploy.promote.command',
                '--config', self.config, '--directory', self.stages] + list(
                    args)

    def promote(self, *args, **kw):
        return subprocess.run(self.command(*(args or (self.name,))),
                              capture_output=True, text=True,
                              env=zeoserver.child_env(), timeout=180, **kw)

    def dump(self):
        with urllib.request.urlopen(self.proxy.url + '/dump',
                                    timeout=30) as r:
            return json.loads(r.read())

    def states(self):
        return {n: s.admin for n, s in self.balancer.servers().items()}


class Load:
    """Writers and a reader through HAProxy; every acknowledged write and
    every failed request is recorded."""

    def __init__(self, url, writers=2, readers=1, pause=0.005):
        self.url = url
        self.pause = pause      # seconds between a thread's requests
        self.acked = []
        self.failed = []
        self.latencies = []      # (start as time.time(), seconds)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.write, args=(i,),
                                         daemon=True)
                        for i in range(writers)] + [
            threading.Thread(target=self.read, daemon=True)
            for _ in range(readers)]
        for t in self.threads:
            t.start()

    def request(self, path, method='GET'):
        wall, started = time.time(), time.monotonic()
        try:
            req = urllib.request.Request(self.url + path, method=method,
                                         data=b'' if method == 'POST'
                                         else None)
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
                ok = r.status == 200
        except (urllib.error.HTTPError, OSError) as e:
            ok = False
            self.failed.append('%s %s: %s' % (method, path, e))
        self.latencies.append((wall, time.monotonic() - started))
        return ok

    def write(self, i):
        n = 0
        while not self.stopping.is_set():
            n += 1
            key = 'w%d-%d' % (i, n)
            if self.request('/write?k=%s&v=%d' % (key, n), 'POST'):
                self.acked.append(key)
            time.sleep(self.pause)

    def read(self):
        while not self.stopping.is_set():
            self.request('/read?k=w0-1')
            time.sleep(self.pause)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(70)
