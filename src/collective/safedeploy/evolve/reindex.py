"""Re-index only what an evolve step changed.

Re-indexing a changed object in *every* index is what makes evolve steps
slow and conflict-prone (the catalog's big BTrees are written for nothing).
A step that changes one attribute should re-index that attribute's indexes
only, and each object once::

    from collective.safedeploy.evolve import Reindexer

    def evolve(site):
        reindexer = Reindexer(site.catalog, docid_for=site.docid_for)
        for doc in site.documents():
            doc.title = doc.title.strip()
            reindexer.changed(doc, 'title')
        reindexer.flush()           # each doc once, in 'title' only

Two catalog APIs are supported:

- CMF / Plone: an object with ``reindexObject(idxs=[...])`` is asked to
  re-index itself in the named indexes (no catalog needed);
- repoze.catalog (KARL): ``catalog[name].reindex_doc(docid, obj)`` for each
  named index; ``docid_for(obj)`` gives the document id (KARL:
  ``lambda o: catalog.document_map.docid_for_address(resource_path(o))``).
"""
from ..core.errors import ConfigurationError


def reindex(obj, indexes, catalog=None, docid=None):
    """Re-index ``obj`` in ``indexes`` only."""
    indexes = list(indexes)
    if not indexes:
        return
    if hasattr(obj, 'reindexObject'):
        obj.reindexObject(idxs=indexes)
        return
    if catalog is None or docid is None:
        raise ConfigurationError(
            'cannot re-index %r: it has no reindexObject, so pass the '
            'catalog and its docid' % (obj,))
    for name in indexes:
        catalog[name].reindex_doc(docid, obj)


class Reindexer:
    """Collect (object, indexes) during a step; re-index each object once."""

    def __init__(self, catalog=None, docid_for=None):
        self.catalog = catalog
        self.docid_for = docid_for
        self._pending = {}      # id(obj) -> (obj, set of index names)

    def changed(self, obj, *indexes):
        entry = self._pending.setdefault(id(obj), (obj, set()))
        entry[1].update(indexes)

    def __len__(self):
        return len(self._pending)

    def flush(self):
        """Re-index what was collected; returns the number of (object,
        index) pairs re-indexed."""
        count = 0
        for obj, indexes in self._pending.values():
            docid = self.docid_for(obj) if self.docid_for else None
            reindex(obj, sorted(indexes), self.catalog, docid)
            count += len(indexes)
        self._pending.clear()
        return count
