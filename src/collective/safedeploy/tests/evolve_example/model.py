"""The example site: documents with a title, a body blob and a tiny
repoze.catalog-shaped catalog (indexes with ``reindex_doc``)."""
import os
import time

import BTrees.OOBTree
import persistent
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob


class FieldIndex(persistent.Persistent):

    def __init__(self, attribute):
        self.attribute = attribute
        self.values = BTrees.OOBTree.OOBTree()
        self.reindexed = 0

    def reindex_doc(self, docid, obj):
        self.values[docid] = getattr(obj, self.attribute, None)
        self.reindexed += 1


class Catalog(PersistentMapping):
    pass


class Document(persistent.Persistent):

    def __init__(self, docid, title, body):
        self.docid = docid
        self.title = title
        self.body = Blob(body)


class Site(persistent.Persistent):

    def __init__(self):
        self.documents = BTrees.OOBTree.OOBTree()
        self.catalog = Catalog()
        self.catalog['title'] = FieldIndex('title')
        self.catalog['size'] = FieldIndex('size')

    def add(self, docid, title, body):
        doc = self.documents[docid] = Document(docid, title, body)
        for index in self.catalog.values():
            index.reindex_doc(docid, doc)
        return doc

    def docid_for(self, doc):
        return doc.docid


def make_site(root, documents=3, body=b'body of %d'):
    site = root['site'] = Site()
    for i in range(documents):
        site.add(i, ' title %d ' % i, body % i if b'%' in body else body)
    return site


def step_hook(n):
    """The crash-test hooks of the example steps."""
    delay = float(os.environ.get('SAFEDEPLOY_EXAMPLE_SLEEP') or 0)
    if delay:
        time.sleep(delay)
    # a test does something while the evolve runs, then says go
    wait = os.environ.get('SAFEDEPLOY_EXAMPLE_WAIT')
    deadline = time.monotonic() + 120
    while n == 1 and wait and not os.path.exists(wait) and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    if os.environ.get('SAFEDEPLOY_EXAMPLE_FAIL') == str(n):
        raise RuntimeError('example step %d fails on purpose' % n)


# the evolve steps, shared by the three runner kinds

def strip_titles(site):
    """1: a plain attribute change."""
    for doc in site.documents.values():
        doc.title = doc.title.strip()
        doc.evolved = 1


def upper_bodies(site):
    """2: a new blob revision for every document."""
    for doc in site.documents.values():
        with doc.body.open('r') as f:
            data = f.read()
        with doc.body.open('w') as f:
            f.write(data.upper())


def reindex_titles(site):
    """3: re-index only the index the change in step 1 concerns."""
    from collective.safedeploy.evolve import Reindexer
    reindexer = Reindexer(site.catalog, docid_for=site.docid_for)
    for doc in site.documents.values():
        reindexer.changed(doc, 'title')
    reindexer.flush()


STEPS = {1: strip_titles, 2: upper_bodies, 3: reindex_titles}
