"""A tiny WSGI site over ZODB through ZEO, run as a process by the promote
tests: ``python promote_app.py PORT ZEO-ADDRESS [HOST [CLIENT VAR]]`` (HOST:
the address to listen on, default 127.0.0.1); with CLIENT and VAR, its ZEO
client keeps a persistent cache (ZEO's ``client`` and ``var``:
``VAR/CLIENT-1.zec``).

GET /ok: 200 when the database answers; GET /release: the name of the
directory the app was started in (a release directory); GET /read?k=KEY;
POST /write?k=KEY&v=VALUE commits root['writes'][KEY] = VALUE and answers
``written PORT``; GET /dump: every key (after a round trip to the
server, so it holds every write any client was told had committed).  A
write the server refuses before anything was committed (it is frozen:
ReadOnlyError; it is away: ClientDisconnected before the commit) is tried
again for up to 1 s, then answered 503 so that the balancer retries it on
another server.
"""
import json
import os
import socketserver
import sys
import threading
import time
import urllib.parse
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import WSGIServer
from wsgiref.simple_server import make_server

import transaction
import ZEO
from BTrees.OOBTree import OOBTree
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError
from ZODB.POSException import ReadOnlyError

PORT, ADDRESS = int(sys.argv[1]), sys.argv[2]
LISTEN = sys.argv[3] if len(sys.argv) > 3 else '127.0.0.1'
RELEASE = os.path.basename(os.getcwd())
host, _, port = ADDRESS.rpartition(':')
cache = dict(client=sys.argv[4], var=sys.argv[5]) if len(sys.argv) > 5 \
    else {}
storage = ZEO.client((host, int(port)), wait=False, min_disconnect_poll=0.05,
                     max_disconnect_poll=0.2, wait_timeout=1, **cache)
db = None
lock = threading.Lock()


class Retry(Exception):
    pass


def database():
    global db
    with lock:
        if db is None:
            import ZODB
            try:
                db = ZODB.DB(storage)
            except ClientDisconnected:
                raise Retry()
        return db


def write(key, value):
    tm = transaction.TransactionManager()
    conn = database().open(tm)
    try:
        for attempt in tm.attempts(20):
            with attempt:
                root = conn.root()
                if 'writes' not in root:
                    root['writes'] = OOBTree()
                root['writes'][key] = value
    finally:
        conn.close()


def read(key=None):
    tm = transaction.TransactionManager()
    conn = database().open(tm)
    try:
        writes = conn.root().get('writes') or {}
        return dict(writes) if key is None else writes.get(key)
    finally:
        tm.abort()
        conn.close()


def app(environ, start_response):
    path = environ['PATH_INFO']
    q = dict(urllib.parse.parse_qsl(environ.get('QUERY_STRING', '')))
    deadline = time.monotonic() + 1.0
    while True:
        try:
            if path == '/ok':
                read('-')
                body = 'ok'
            elif path == '/release':
                body = RELEASE
            elif path == '/read':
                body = json.dumps(read(q['k']))
            elif path == '/dump':
                # a round trip to the server first: ZEO applies the
                # invalidations the server sent before its answer, so the
                # dump sees every commit another client was told of
                storage.server_status()
                body = json.dumps(read())
            elif path == '/write' and environ['REQUEST_METHOD'] == 'POST':
                write(q['k'], q['v'])
                body = 'written %d' % PORT
            else:
                start_response('404 Not Found', [])
                return [b'']
            start_response('200 OK', [('Content-Type', 'text/plain')])
            return [body.encode()]
        except (Retry, ReadOnlyError, ClientDisconnected, ConflictError):
            if time.monotonic() > deadline:
                start_response('503 Service Unavailable', [])
                return [b'try again']
            time.sleep(0.02)


class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


server = make_server(LISTEN, PORT, app, server_class=Server,
                     handler_class=Quiet)
print('listening', flush=True)
server.serve_forever()
