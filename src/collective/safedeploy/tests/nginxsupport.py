"""A real nginx on loopback for tests: its own prefix directory,
configuration, pid file and upstream include file (written as the
``nginx`` balancer writes it) in a temporary directory; stopped (and the
directory removed) in cleanup."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from collective.safedeploy.balancer import nginx
from . import haproxysupport

NGINX = shutil.which('nginx') or next(
    (p for p in ('/usr/sbin/nginx', '/usr/local/sbin/nginx')
     if os.path.exists(p)), None)

CONFIG = '''\
{user}worker_processes 1;
daemon on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
worker_shutdown_timeout 20s;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client-body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {upstream};
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # a site answers 503 to a write it did not commit: tried again
            # on another server
            proxy_next_upstream error timeout http_503 non_idempotent;
            proxy_next_upstream_tries 40;
            proxy_read_timeout 60s;
        }}
    }}
}}
'''


def skip_unless_nginx(test):
    if NGINX is None:
        test.skipTest('nginx is not installed (apt-get install nginx)')


class Nginx:
    """``servers``: [(name, port, initially_ready)]."""

    def __init__(self, test, servers, upstream='site'):
        skip_unless_nginx(test)
        self.directory = tempfile.mkdtemp(prefix='nginx-')
        test.addCleanup(shutil.rmtree, self.directory, True)
        self.upstream = upstream
        self.file = os.path.join(self.directory, 'upstream.conf')
        self.config = os.path.join(self.directory, 'nginx.conf')
        self.pid_file = os.path.join(self.directory, 'nginx.pid')
        self.port = haproxysupport.free_port()
        self.servers = [(name, '127.0.0.1:%d' % port)
                        for name, port, _ in servers]
        with open(self.file, 'w') as f:
            f.write(nginx.render(upstream, self.servers, {
                name: 'ready' if ready else 'maint'
                for name, _, ready in servers}))
        with open(self.config, 'w') as f:
            f.write(CONFIG.format(
                user='user root;\n' if os.geteuid() == 0 else '',
                prefix=self.directory, upstream=self.file, port=self.port,
                name=upstream))
        self.start()
        test.addCleanup(self.stop)

    @property
    def spec(self):
        return 'nginx:%s upstream=%s servers=%s conf=%s pid=%s nginx=%s' % (
            self.file, self.upstream, ','.join(
                '%s=%s' % s for s in self.servers), self.config,
            self.pid_file, NGINX)

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    def start(self):
        p = subprocess.run([NGINX, '-c', self.config], capture_output=True,
                           text=True)
        if p.returncode:
            raise AssertionError('nginx did not start: %s' % p.stderr)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(('127.0.0.1', self.port), 1):
                    return
            except OSError:
                time.sleep(0.02)
        raise AssertionError('nginx did not listen in 10 s')

    def master(self):
        try:
            with open(self.pid_file) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        pid = self.master()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)

    def restart(self):
        self.stop()
        while self.master() is not None and os.path.exists(
                '/proc/%d' % self.master()):
            time.sleep(0.02)
        self.start()
