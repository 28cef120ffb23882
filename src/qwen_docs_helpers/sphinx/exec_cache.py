"""Check the execution cache before a build: a damaged cache is repaired, never used half-written.

jupyter-cache keeps executed notebooks in files indexed by an SQLite database. A build killed while
writing can leave a record whose notebook file is missing or truncated, and a damaged database makes
every later build crash. Before any page runs, each cached notebook is read back; unreadable records
are dropped (those pages simply execute again) and an unreadable database is moved aside whole. A missing
cache is created before the pages run, so that parallel readers do not race to create it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

logger = logging.getLogger(__name__)


def repair_cache(path: Path) -> list[str]:
    """Drop unreadable records of the cache at ``path`` (or move the cache aside); returns what was done."""
    if not path.exists():
        return []
    from jupyter_cache import get_cache
    from jupyter_cache.cache.db import NbCacheRecord

    try:
        cache = get_cache(path)
        records = cache.list_cache_records()
    except Exception as error:  # a damaged database: nothing in it can be trusted
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(path, aside)
        return [f"execution cache {path} was unreadable ({type(error).__name__}); moved to {aside}"]
    done = []
    for record in records:
        try:
            cache.get_cache_bundle(record.pk)
        except Exception as error:
            try:
                cache.remove_cache(record.pk)  # the record and its notebook folder
            except KeyError:  # the notebook file is gone already: drop the record alone
                NbCacheRecord.remove_records([record.pk], cache.db)
            done.append(f"dropped damaged cache record {record.pk} for {record.uri} ({type(error).__name__})")
    return done


def create_cache(path: Path) -> None:
    """Create the cache's database now, in the main process, if it does not exist yet.

    Otherwise the parallel readers of a ``-j`` build each create it on their first page and race on
    ``CREATE TABLE`` (sqlite3 "table settings already exists", a crash of the whole build).
    """
    from jupyter_cache import get_cache

    get_cache(path).list_cache_records()  # opening the database creates its tables


def check_cache(app: Sphinx, config: Config) -> None:
    if config.nb_execution_mode != "cache" or not config.nb_execution_cache_path:
        return
    path = Path(config.nb_execution_cache_path)
    for line in repair_cache(path):
        logger.info(f"[qwen-docs] {line}; the affected pages will execute again")
    create_cache(path)


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("config-inited", check_cache, priority=800)  # after site.py chose this runtime's cache folder
    return {"parallel_read_safe": True, "parallel_write_safe": True}
