"""Open the catalog the settings name: SQLite in the data directory (the embedded
default, one instance) or a PostgreSQL database shared by many instances."""

from __future__ import annotations

from cloud_ingest.catalog import Catalog
from cloud_ingest.catalog_sqlite import SqliteCatalog
from cloud_ingest.settings import IngestSettings

__all__ = ["open_catalog"]


async def open_catalog(settings: IngestSettings) -> Catalog:
    """The catalog, migrated and ready; CatalogUnavailable/CatalogVersionError say why not."""
    if settings.catalog is None:
        return await SqliteCatalog.open(
            settings.catalog_path, synchronous=settings.catalog_synchronous
        )
    from cloud_ingest.catalog_postgres import PostgresCatalog  # asyncpg only when used

    return await PostgresCatalog.open(
        settings.catalog, pool_size=settings.catalog_pool_size, shown=settings.catalog_shown
    )
