"""The technician's terminal UI (``yardlink tui``): a client of the local API only.

Only this package imports textual.  ``client`` (aiohttp) and ``status_view``
(pure) import no textual, so ``yardlink appliance status`` reuses them.
"""
