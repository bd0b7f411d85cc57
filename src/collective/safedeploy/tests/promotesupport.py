"""A stage for the promote tests: a main set (ZEO server, two WSGI
clients) and a twin (ZEO address, one WSGI client) behind a real HAProxy,
a stages file, and a load generator sending reads and writes through
HAProxy.  With ``data_from='previous'`` there is a previous stage's data
root too (``dev``), the stage's data starts as a copy of it, and the
clients keep persistent ZEO caches that the stages file names, with the
commands that stop and start them (:mod:`.promote_client`)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request

from collective.safedeploy import balancer as balancers
from collective.safedeploy.evolve import state
from collective.safedeploy.zeo import server as zeoserver
from . import haproxysupport
from . import nginxsupport
from . import promote_client
from . import zeosupport

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, 'promote_client.py')
EVOLVE = 'collective.safedeploy.tests.evolve_example'


def make_data(root):
    """``root/generations/1``, current, with an empty ``writes`` tree and
    the example site of :mod:`.evolve_example` (documents with blobs, at
    version 0 of its evolve)."""
    import transaction
    import ZODB
    from BTrees.OOBTree import OOBTree
    from ZODB.FileStorage import FileStorage
    from .evolve_example import model
    data = state.DataRoot(root)
    data.generations.stage('1')
    os.makedirs(os.path.dirname(data.fs('1')))
    db = ZODB.DB(FileStorage(data.fs('1'), blob_dir=data.blobs('1')))
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    conn.root()['writes'] = OOBTree()
    model.make_site(conn.root())
    tm.commit()
    conn.close()
    db.close()
    data.generations.complete('1', dict(source='test'))
    data.generations.flip('1')
    return data


def copy_data(source, root):
    """``root/generations/1``, current: a copy of ``source``'s current
    generation (the same transactions)."""
    data = state.DataRoot(root)
    data.generations.stage('1')
    os.makedirs(os.path.dirname(data.fs('1')))
    shutil.copyfile(source.fs(source.current()), data.fs('1'))
    shutil.copytree(source.blobs(source.current()), data.blobs('1'))
    data.generations.complete('1', dict(source='test'))
    data.generations.flip('1')
    return data


def write(data, **items):
    """Commit ``items`` into root['writes'] of data root ``data``'s current
    generation (no server serves it)."""
    import transaction
    import ZODB
    from ZODB.FileStorage import FileStorage
    name = data.current()
    db = ZODB.DB(FileStorage(data.fs(name), blob_dir=data.blobs(name)))
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        conn.root()['writes'].update(items)
        tm.commit()
        conn.close()
    finally:
        db.close()


class Stage:

    def __init__(self, test, name='beta', data_from='self',
                 balancer='haproxy'):
        """``balancer``: ``haproxy`` or ``nginx`` in front."""
        self.test = test
        self.name = name
        self.data_from = data_from
        if balancer == 'nginx':
            nginxsupport.skip_unless_nginx(test)
        else:
            haproxysupport.skip_unless_haproxy(test)
        self.tmp = zeosupport.temporary_directory(test, 'safedeploy-stage-')
        self.root = os.path.join(self.tmp, name)
        self.twin = os.path.join(self.tmp, name + '_upgrade')
        self.stages = os.path.join(self.tmp, 'stages')
        if data_from == 'previous':
            self.dev_data = make_data(os.path.join(self.tmp, 'dev', 'data'))
            write(self.dev_data, **{'from-dev': '1'})
            self.main_data = copy_data(self.dev_data,
                                       os.path.join(self.root, 'data'))
        else:
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
        self.caches = os.path.join(self.tmp, 'caches')
        os.mkdir(self.caches)
        self.clients = {n: dict(
            port=port, zeo=self.twin_zeo if n.startswith('twin') else
            self.zeo, log=os.path.join(self.tmp, n + '.log'),
            pidfile=os.path.join(self.tmp, n + '.pid'),
            cache=n if data_from == 'previous' else None, var=self.caches)
            for n, port in self.ports.items()}
        self.clients_file = os.path.join(self.tmp, 'clients.json')
        with open(self.clients_file, 'w') as f:
            json.dump(self.clients, f)
        for name_ in self.ports:
            self.start_client(name_)
            test.addCleanup(self.stop_client, name_)
        servers = [('main1', self.ports['main1'], True),
                   ('main2', self.ports['main2'], True),
                   ('twin1', self.ports['twin1'], False)]
        if balancer == 'nginx':
            self.proxy = nginxsupport.Nginx(test, servers, upstream=name)
        else:
            self.proxy = haproxysupport.HAProxy(test, servers, backend=name)
        self.balancer = balancers.open(self.proxy.spec)
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
            data-from = %(data_from)s
            release = %(release)s
            check = http://127.0.0.1:%(main1)d/ok http://127.0.0.1:%(main2)d/ok
            twin-check = http://127.0.0.1:%(twin1)d/ok
            drain-timeout = 5
            check-timeout = %(check_timeout)s
            ''') % dict(name=self.name, root=self.root, twin=self.twin,
                        spec=self.proxy.spec, zeo=self.zeo,
                        twin_zeo=self.twin_zeo,
                        check_timeout=extra.pop('check_timeout', 10),
                        data_from=self.data_from,
                        release=extra.pop('release', 'none'), **self.ports)
        if self.data_from == 'previous':
            control = '%s %s %%s %s %%s' % (sys.executable, CLIENT,
                                            self.clients_file)
            body += textwrap.dedent('''\
                previous-data = %(dev)s
                client-cache = %(caches)s/main*.zec
                twin-client-cache = %(caches)s/twin*.zec
                client-stop-command = %(stop_main)s
                client-start-command = %(start_main)s
                twin-client-stop-command = %(stop_twin)s
                twin-client-start-command = %(start_twin)s
                ''') % dict(
                    dev=self.dev_data.path, caches=self.caches,
                    stop_main=control % ('stop', 'main1 main2'),
                    start_main=control % ('start', 'main1 main2'),
                    stop_twin=control % ('stop', 'twin1'),
                    start_twin=control % ('start', 'twin1'))
        for key, value in extra.items():
            body += '%s = %s\n' % (key.replace('_', '-'), value)
        with open(self.config, 'w') as f:
            f.write(body)

    def start_client(self, name):
        promote_client.start(self.clients[name])

    def stop_client(self, name):
        promote_client.stop(self.clients[name])

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
        kw.setdefault('env', zeoserver.child_env())
        return subprocess.run(self.command(*(args or (self.name,))),
                              capture_output=True, text=True, timeout=180,
                              **kw)

    def evolved(self):
        """The example evolve's version in the main set's current data
        (no server needs to run)."""
        import ZODB
        from ZODB.FileStorage import FileStorage
        name = self.main_data.current()
        db = ZODB.DB(FileStorage(self.main_data.fs(name), read_only=True,
                                 blob_dir=self.main_data.blobs(name)))
        try:
            conn = db.open()
            versions = conn.root().get('repoze.evolution', {})
            return versions.get(EVOLVE)
        finally:
            db.close()

    def dump(self):
        with urllib.request.urlopen(self.proxy.url + '/dump',
                                    timeout=30) as r:
            return json.loads(r.read())

    def states(self):
        return {n: s.admin for n, s in self.balancer.servers().items()}


class Load:
    """Writers and a reader through HAProxy; every acknowledged write and
    every failed request is recorded."""

    def __init__(self, url, writers=2, readers=1, pause=0.01):
        self.url = url
        # seconds between a thread's requests: a steady load that leaves
        # the processors to what is promoted under it
        self.pause = pause
        self.acked = []
        self.served = {}         # acknowledged write: the port that did it
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

    def request(self, path, method='GET', answer=None):
        """True when answered 200; the body is appended to ``answer``."""
        wall, started = time.time(), time.monotonic()
        try:
            req = urllib.request.Request(self.url + path, method=method,
                                         data=b'' if method == 'POST'
                                         else None)
            with urllib.request.urlopen(req, timeout=60) as r:
                body = r.read().decode()
                ok = r.status == 200
            if answer is not None:
                answer.append(body)
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
            answer = []
            if self.request('/write?k=%s&v=%d' % (key, n), 'POST', answer):
                self.served[key] = int(answer[0].split()[-1])
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
