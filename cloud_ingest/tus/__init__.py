"""tus 1.0.0 resumable upload server of the cloud ingest service.

* ``headers`` parses tus headers, ``core`` is the pure state machine,
* ``store`` keeps uploads on disk (offset = bytes on disk), ``receive``
  streams one body, ``routes`` are the aiohttp handlers, ``finish``
  completes an upload (and repairs one a crash left half done), ``sweep`` expires,
* ``chunk_guard`` (with the ``pending`` records) keeps an unchecked chunk from
  being counted after a crash, ``digests`` keeps each upload's running sha256.

Use :func:`add_tus_routes` with an :class:`UploadStore`, a
:class:`~cloud_ingest.blobs.BlobStore` and an ``on_complete`` callback.
"""

from cloud_ingest.tus.finish import CompletedUpload
from cloud_ingest.tus.routes import add_tus_routes
from cloud_ingest.tus.store import UploadStore
from cloud_ingest.tus.sweep import sweep_expired

__all__ = ["CompletedUpload", "UploadStore", "add_tus_routes", "sweep_expired"]
