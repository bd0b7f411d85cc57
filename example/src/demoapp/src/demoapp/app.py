"""The WSGI application.

    GET  /                  what is running, and how many items
    GET  /health            reads and writes the database: 200 or 503
    GET  /items             the items, as JSON
    GET  /items/NAME        one item, as JSON
    PUT  /items/NAME        store a document (body: its text; ?title=)
    PUT  /files/NAME        store a file (body: its bytes)
    GET  /files/NAME        a file's bytes

Writes are refused (503) while the database is read-only (an evolve is
running on a copy) or at a newer data schema than this code knows.
"""
import json
import urllib.parse

import transaction
from ZODB.POSException import ConflictError
from ZODB.POSException import ReadOnlyError

from . import VERSION
from . import model


class Unavailable(Exception):
    pass


class NotFound(Exception):
    pass


class Application:

    def __init__(self, db):
        self.db = db
        with db.transaction() as conn:
            model.bootstrap(conn.root())

    def __call__(self, environ, start_response):
        method = environ['REQUEST_METHOD']
        path = environ.get('PATH_INFO', '/')
        query = dict(urllib.parse.parse_qsl(environ.get('QUERY_STRING', '')))
        length = int(environ.get('CONTENT_LENGTH') or 0)
        body = environ['wsgi.input'].read(length) if length else b''
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        try:
            status, ctype, payload = self.route(
                method, path, query, body, conn.root(), tm)
        except NotFound as e:
            status, ctype, payload = '404 Not Found', 'text/plain', str(e)
        except (Unavailable, ReadOnlyError) as e:
            tm.abort()
            status, ctype, payload = ('503 Service Unavailable', 'text/plain',
                                      str(e) or 'the database is read-only')
        except ConflictError as e:
            tm.abort()
            status, ctype, payload = '409 Conflict', 'text/plain', str(e)
        finally:
            tm.abort()
            conn.close()
        if isinstance(payload, str):
            payload = payload.encode('utf-8')
        start_response(status, [('Content-Type', ctype),
                                ('Content-Length', str(len(payload)))])
        return [payload]

    def route(self, method, path, query, body, root, tm):
        parts = [p for p in path.split('/') if p]
        if method == 'GET' and not parts:
            return self.ok(self.summary(root))
        if method == 'GET' and parts == ['health']:
            return self.health(root, tm)
        if method == 'GET' and parts == ['items']:
            return self.ok([model.describe(n, i)
                            for n, i in root['site'].items()])
        if len(parts) == 2 and parts[0] in ('items', 'files'):
            name = urllib.parse.unquote(parts[1])
            if method == 'PUT':
                schema = self.writable(root)
                if parts[0] == 'items':
                    item = model.Document(query.get('title', name),
                                          body.decode('utf-8'), schema)
                else:
                    item = model.File(body, query.get(
                        'type', 'application/octet-stream'), schema)
                root['site'][name] = item
                tm.get().note('stored %s' % name)
                tm.commit()
                return self.ok(model.describe(name, item), '201 Created')
            if method == 'GET':
                item = root['site'].get(name)
                if item is None:
                    raise NotFound('no item %r' % name)
                if parts[0] == 'files':
                    if item.kind != 'file':
                        raise NotFound('%r is not a file' % name)
                    return '200 OK', item.content_type, item.read()
                return self.ok(model.describe(name, item))
        raise NotFound('no such page: %s %s' % (method, path))

    def ok(self, data, status='200 OK'):
        return status, 'application/json', json.dumps(data, indent=1)

    def summary(self, root):
        from .evolve import VERSION as SCHEMA
        return {'version': VERSION, 'schema': SCHEMA,
                'database_schema': model.database_schema(root),
                'items': len(root['site'])}

    def writable(self, root):
        """The schema to write in: the database's, if this code knows it."""
        from .evolve import VERSION as SCHEMA
        at = model.database_schema(root)
        if at > SCHEMA:
            raise Unavailable('the database is at data schema %d, newer than '
                              'this release (%d): roll back with the data'
                              % (at, SCHEMA))
        return at

    def health(self, root, tm):
        """Proof that this release can read and write the database."""
        self.writable(root)
        count = len(root['site'])
        probe = root['health']
        probe.count += 1
        tm.get().note('health check')
        tm.commit()
        return self.ok({'ok': True, 'version': VERSION, 'items': count})
