"""``MetadataStore``: the one object through which everything is recorded and looked up.

It combines the model center, the run registry and lineage (each in its own module) over one
:class:`~aiflow_notebook.storage.database.Database`. Opening a store upgrades the schema when needed, so a new
SQLite file or an older database just works. Which store the SDK's module-level functions use (this one,
or a connected server's) is :mod:`aiflow_notebook.meta.default`'s business.
"""

from __future__ import annotations

from aiflow_notebook.core.config import default_meta_url
from aiflow_notebook.meta.lineage import Lineage
from aiflow_notebook.meta.model_center import ModelCenter
from aiflow_notebook.meta.publisher import EventPublisher, RecordingPublisher
from aiflow_notebook.meta.runs import RunRegistry
from aiflow_notebook.storage.database import Database, safe_url


class MetadataStore(ModelCenter, RunRegistry, Lineage):
    """Metadata, model center and lineage over SQLAlchemy (SQLite by default, PostgreSQL by URL).

    ``url`` defaults to ``$AIFLOW_META_URL``, else ``sqlite:///$AIFLOW_HOME/meta.db``. ``publisher``
    receives model-stage events after each commit (default: an in-process :class:`RecordingPublisher`).
    """

    def __init__(self, url: str | None = None, *, publisher: EventPublisher | None = None, upgrade: bool = True):
        self._db = Database(url or default_meta_url())
        self.publisher: EventPublisher = publisher if publisher is not None else RecordingPublisher()
        if upgrade:
            self._db.ensure_schema()

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return safe_url(self._db.url)

    def close(self) -> None:
        self._db.dispose()

    def __enter__(self) -> MetadataStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetadataStore({self.url!r})"

