"""The example site and its demo.

- the demo plays the whole release story (it fails if any of its checks
  fails), and after each step the site is checked again over HTTP,
  independently of the demo's own checks;
- Ctrl-C stops the site's processes and leaves the site directory;
- the example's evolve step transforms stored objects and blobs.
"""
import doctest
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from unittest import mock

from . import support

EXAMPLE = os.path.join(support.CHECKOUT, 'example')
DEMO = os.path.join(EXAMPLE, 'demo.py')


def load_demo():
    spec = importlib.util.spec_from_file_location('safedeploy_demo', DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get(url, path):
    try:
        with urllib.request.urlopen(url + path, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def supervisord_pid(site):
    try:
        with open(os.path.join(site, 'var', 'supervisord.pid')) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


class TestDemo(unittest.TestCase):

    def setUp(self):
        support.require_site_venv()
        self.tmp = tempfile.mkdtemp(prefix='safedeploy-demo-')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.site = os.path.join(self.tmp, 'site')
        env = mock.patch.dict(os.environ, {
            'SAFEDEPLOY_DEMO_EGGS': support.shared_directory('eggs'),
            'SAFEDEPLOY_DEMO_DOWNLOADS': support.shared_directory(
                'download-cache')})
        env.start()
        self.addCleanup(env.stop)
        self.demo = load_demo()

    def check_over_http(self, stage, story):
        """What a browser would see after each step."""
        url = story.http.url
        expected_version = {'1.0': '1.0', '1.1': '1.1', '1.2': '1.1',
                            '1.3': '1.1', 'rollback': '1.0',
                            'lists': '1.0'}[stage]
        status, body = get(url, '/')
        self.assertEqual(status, 200, stage)
        self.assertEqual(json.loads(body)['version'], expected_version, stage)
        status, body = get(url, '/items')
        names = {i['name'] for i in json.loads(body)}
        self.assertTrue(set(self.demo.CONTENT) <= names, (stage, names))
        self.assertEqual('news' in names, stage in ('1.1', '1.2', '1.3'),
                         (stage, names))
        for name, data in self.demo.files().items():
            status, body = get(url, '/files/' + name)
            self.assertEqual((status, hashlib.sha256(body).hexdigest()),
                             (200, hashlib.sha256(data).hexdigest()), stage)
        self.assertEqual(get(url, '/health')[0], 200, stage)
        self.assertEqual(get(url, '/items/no-such-item')[0], 404, stage)
        self.stages.append(stage)

    def test_the_story(self):
        self.stages = []
        out = io.StringIO()
        self.addCleanup(self.demo.stop_processes, self.site, io.StringIO())
        try:
            story = self.demo.play(self.site, out=out,
                                   observer=self.check_over_http)
        except self.demo.CheckFailed as e:
            self.fail('the demo failed: %s\n%s' % (e, out.getvalue()))
        text = out.getvalue()
        self.assertIn('All %d checks passed.' % story.checks, text)
        self.assertGreaterEqual(story.checks, 25)
        self.assertEqual(self.stages, ['1.0', '1.1', '1.2', '1.3',
                                       'rollback', 'lists'])
        for n in range(1, 7):
            self.assertIn('\n%d. ' % n, text)
        self.assertEqual(len(re.findall(r'(?m)^   \(\d+\.\d s\)$', text)), 6,
                         text)   # each step timed
        pid = supervisord_pid(self.site)
        self.assertTrue(self.demo.stop_processes(self.site, io.StringIO()))
        self.assertFalse(pid_alive(pid))
        self.assertTrue(os.path.islink(os.path.join(self.site, 'current')))

    def test_ctrl_c_stops_the_processes_and_leaves_the_site(self):
        env = dict(os.environ)
        env.pop('PYTHONPATH', None)
        # in a session of its own: Ctrl-C reaches the terminal's whole
        # foreground process group, the demo and what it runs
        p = subprocess.Popen([sys.executable, DEMO, self.site], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
        self.addCleanup(self.demo.stop_processes, self.site, io.StringIO())
        self.addCleanup(p.stdout.close)
        self.addCleanup(p.kill)
        output = []
        for line in p.stdout:   # wait for the site to run
            output.append(line)
            if 'ok: supervisord runs' in line:
                break
        pid = supervisord_pid(self.site)
        self.assertIsNotNone(pid, ''.join(output))
        self.assertTrue(pid_alive(pid))
        self.assertIsNone(p.poll(), ''.join(output))
        os.killpg(p.pid, signal.SIGINT)
        rest, _ = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 130, ''.join(output) + rest)
        self.assertIn('demo interrupted; the site is left in', rest)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(pid_alive(pid), 'supervisord still runs')
        self.assertTrue(os.path.isdir(os.path.join(self.site, 'releases')))


class TestEvolveSteps(unittest.TestCase):
    """demoapp.evolve, run by the repoze.evolution-style runner on a real
    FileStorage with blobs."""

    def setUp(self):
        sys.path.insert(0, DEMOAPP_SRC)
        self.addCleanup(unimport_demoapp)
        self.tmp = tempfile.mkdtemp(prefix='safedeploy-evolve-')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_evolve1_transforms_objects_and_blobs(self):
        from ZODB import DB
        from ZODB.FileStorage import FileStorage
        from collective.safedeploy.evolve import runners
        import demoapp.evolve
        from demoapp import model
        self.assertEqual(demoapp.evolve.VERSION, 0)  # as release 1.0 has it
        db = DB(FileStorage(os.path.join(self.tmp, 'Data.fs'),
                            blob_dir=os.path.join(self.tmp, 'blobs')))
        self.addCleanup(db.close)
        data = os.urandom(5000)
        with db.transaction() as conn:
            root = conn.root()
            model.bootstrap(root)
            root['site']['doc'] = model.Document('Doc', 'three little words')
            root['site']['file'] = model.File(data, 'application/x-test')
        runner = runners.PackageRunner(demoapp.evolve)
        runner.sw_version = 1                        # release 1.1's VERSION
        runner, steps = runners.evolve(db, runner)
        self.assertEqual([s.name for s in steps], ['demoapp.evolve.evolve1'])
        with db.transaction() as conn:
            root = conn.root()
            self.assertEqual(root['repoze.evolution']['demoapp.evolve'], 1)
            doc, f = root['site']['doc'], root['site']['file']
            self.assertFalse(hasattr(doc, 'body'))
            self.assertEqual((doc.text, doc.words),
                             ('three little words', 3))
            with f.blob.open('r') as b:
                stored = b.read()
            self.assertEqual(gzip.decompress(stored), data)
            self.assertEqual((f.encoding, f.size, f.sha256),
                             ('gzip', 5000, hashlib.sha256(data).hexdigest()))
            self.assertEqual(f.read(), data)
        # run again: nothing left to do
        runner, steps = runners.evolve(db, runner)
        self.assertEqual(steps, [])


DEMOAPP_SRC = os.path.join(EXAMPLE, 'src', 'demoapp', 'src')


def unimport_demoapp():
    if DEMOAPP_SRC in sys.path:
        sys.path.remove(DEMOAPP_SRC)
    for name in list(sys.modules):
        if name == 'demoapp' or name.startswith('demoapp.'):
            del sys.modules[name]


def docs_set_up(test):
    """docs/example.rst: the application on a real FileStorage with
    blobs; ``call`` makes one WSGI request."""
    from ZODB import DB
    from ZODB.FileStorage import FileStorage
    sys.path.insert(0, DEMOAPP_SRC)
    from demoapp.app import Application
    tmp = tempfile.mkdtemp(prefix='safedeploy-example-doc-')
    db = DB(FileStorage(os.path.join(tmp, 'Data.fs'),
                        blob_dir=os.path.join(tmp, 'blobs')))
    app = Application(db)

    def call(method, path, body=b''):
        path, _, query = path.partition('?')
        environ = {'REQUEST_METHOD': method, 'PATH_INFO': path,
                   'QUERY_STRING': query, 'CONTENT_LENGTH': str(len(body)),
                   'wsgi.input': io.BytesIO(body)}
        answer = {}

        def start_response(status, headers):
            answer['status'] = status.split()[0]
            answer['type'] = dict(headers)['Content-Type']
        payload = b''.join(app(environ, start_response))
        if answer['type'] == 'application/json':
            text = json.dumps(json.loads(payload))
        elif answer['type'] == 'text/plain':
            text = payload.decode('utf-8')
        else:
            text = repr(payload)
        print(answer['status'], text)

    test.globs.update(call=call, db=db, tmp=tmp)


def docs_tear_down(test):
    test.globs['db'].close()
    shutil.rmtree(test.globs['tmp'], ignore_errors=True)
    unimport_demoapp()


class TestDemoDirectory(unittest.TestCase):
    """example/demo.py DIR never removes what it did not make."""

    def test_a_non_empty_directory_it_did_not_make_is_refused(self):
        demo = load_demo()
        tmp = tempfile.mkdtemp(prefix='safedeploy-demo-dir-')
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        with open(os.path.join(tmp, 'precious.txt'), 'w') as f:
            f.write('mine')
        err = io.StringIO()
        with mock.patch.object(sys, 'argv', ['demo.py', tmp]), \
                mock.patch.object(sys, 'stderr', err):
            self.assertEqual(demo.main(), 2)
        self.assertEqual(os.listdir(tmp), ['precious.txt'])
        self.assertIn('is not empty and was not made by the demo',
                      err.getvalue())
        self.assertEqual(len(err.getvalue().strip().splitlines()), 1)

    def test_help_makes_nothing(self):
        tmp = tempfile.mkdtemp(prefix='safedeploy-demo-dir-')
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        r = support.run([sys.executable, DEMO, '--help'], cwd=tmp)
        self.assertEqual(r.returncode, 0, r)
        self.assertIn('usage: demo.py [-h] [SITE_DIRECTORY]', r.output)
        self.assertEqual(os.listdir(tmp), [])

    def test_what_it_made_it_may_remove_and_eggs_stay_inside(self):
        demo = load_demo()
        tmp = tempfile.mkdtemp(prefix='safedeploy-demo-dir-')
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        site = os.path.join(tmp, 'site')
        os.mkdir(site)
        with open(os.path.join(site, demo.MARKER), 'w') as f:
            f.write('made by the demo\n')
        demo.check_site(site)          # no refusal
        with mock.patch.dict(os.environ):
            os.environ.pop('SAFEDEPLOY_DEMO_EGGS', None)
            os.environ.pop('SAFEDEPLOY_DEMO_DOWNLOADS', None)
            options = demo.offline_options(site)
        for option in options:
            if option.startswith(('buildout:eggs-directory=',
                                  'buildout:download-cache=')):
                self.assertTrue(option.split('=', 1)[1].startswith(
                    site + os.sep), option)


def test_suite():
    suite = unittest.defaultTestLoader.loadTestsFromName(__name__)
    suite.addTest(doctest.DocFileSuite(
        os.path.join(support.CHECKOUT, 'docs', 'example.rst'),
        module_relative=False, setUp=docs_set_up, tearDown=docs_tear_down,
        optionflags=doctest.NORMALIZE_WHITESPACE))
    return suite
