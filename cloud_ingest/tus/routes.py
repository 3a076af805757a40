"""aiohttp handlers of the tus 1.0.0 server at ``/v1/uploads/`` and ``HEAD /v1/blobs``.

Each handler parses headers (``headers.py``), asks the pure core (``core.py``)
what is allowed, and does the I/O through the store; ``finish.py`` completes
an upload (and repairs one a crash left half finished).  Ownership: a device may
touch only the uploads it created; operators may HEAD and DELETE any.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from cloud_ingest.app_keys import CATALOG
from cloud_ingest.blobs import BlobStore, is_sha256
from cloud_ingest.errors import (
    BadRequest,
    Forbidden,
    Locked,
    PreconditionFailed,
    UnsupportedMediaType,
)
from cloud_ingest.principal import Principal, principal_of, require_device
from cloud_ingest.tus import headers as h
from cloud_ingest.tus.core import UploadInfo, plan_creation, plan_patch, require_found
from cloud_ingest.tus.finish import UPLOADS, CompletedUpload, OnComplete, UploadFinisher
from cloud_ingest.tus.receive import receive_body
from cloud_ingest.tus.store import UploadStore

__all__ = ["CompletedUpload", "add_tus_routes"]

OCTET = "application/offset+octet-stream"
HEAD_SETTLE_S = 5.0  # longest a HEAD waits for a PATCH in flight on the same upload


class _TusHandlers:
    def __init__(self, store: UploadStore, blobs: BlobStore, on_complete: OnComplete) -> None:
        self.store = store
        self.blobs = blobs
        self.finisher = UploadFinisher(store, blobs, on_complete)

    # ---------------------------------------------------------------- helpers
    def _base_headers(self, info: UploadInfo) -> dict[str, str]:
        headers = {"Tus-Resumable": h.TUS_VERSION, "Cache-Control": "no-store"}
        if not info.completed:
            headers["Upload-Expires"] = h.http_date(info.expires_at)
        return headers

    async def _find(
        self, request: web.Request, *, operator_ok: bool
    ) -> tuple[UploadInfo, Principal]:
        principal = principal_of(request)
        upload_id = request.match_info["upload_id"]
        info = require_found(await self.store.load(upload_id), upload_id, self.store.clock())
        if principal.is_operator and operator_ok:
            return info, principal
        if principal.is_operator or principal.device_id != info.device_id:
            raise Forbidden("this upload belongs to another device")
        return info, principal

    async def _drop_unreachable(self, upload_id: str) -> None:
        """Delete an upload whose creation failed: the error carried no Location.

        A completed one stays (its blob and notification are done).
        """
        info = await self.store.load(upload_id)
        if info is not None and not info.completed:
            await self.store.remove(upload_id)

    # ---------------------------------------------------------------- handlers
    async def options(self, request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers={
                "Tus-Resumable": h.TUS_VERSION,
                "Tus-Version": h.TUS_VERSION,
                "Tus-Extension": h.TUS_EXTENSIONS,
                "Tus-Max-Size": str(self.store.max_size),
                "Tus-Checksum-Algorithm": ",".join(h.CHECKSUM_ALGORITHMS),
            },
        )

    async def create(self, request: web.Request) -> web.Response:
        principal = require_device(request)
        assert principal.device_id is not None
        length = plan_creation(
            h.parse_non_negative("Upload-Length", h.single(request.headers, "Upload-Length")),
            h.single(request.headers, "Upload-Defer-Length"),
            self.store.max_size,
        )
        metadata = h.parse_metadata(h.single(request.headers, "Upload-Metadata"))
        if "sha256" in metadata and not is_sha256(metadata["sha256"]):
            raise BadRequest("Upload-Metadata sha256 must be 64 lowercase hex digits")
        checksum = h.parse_checksum(h.single(request.headers, "Upload-Checksum"))
        with_body = request.content_type == OCTET
        if request.body_exists and not with_body:
            raise UnsupportedMediaType(f"an upload body must be {OCTET}")
        now = self.store.clock()
        info = UploadInfo(
            upload_id=self.store.new_id(),
            device_id=principal.device_id,
            length=length,
            metadata=metadata,
            created_at=now,
            expires_at=now + self.store.expire_after_s,
        )
        await self.store.begin(info)
        headers = {"Location": f"{UPLOADS}/{info.upload_id}"}
        if with_body:
            try:
                async with self.store.lock(info.upload_id):
                    info, offset = await self._write(request, info, 0, checksum, None)
            except BaseException:
                await self._drop_unreachable(info.upload_id)
                raise
            headers["Upload-Offset"] = str(offset)
        elif length == 0:  # nothing to send: complete at once
            async with self.store.lock(info.upload_id):
                info = await self.finisher.finish(info)
        headers.update(self._base_headers(info))
        return web.Response(status=201, headers=headers)

    async def head(self, request: web.Request) -> web.Response:
        info, _ = await self._find(request, operator_ok=True)
        await self._settle(info.upload_id)
        info = require_found(
            await self.store.load(info.upload_id), info.upload_id, self.store.clock()
        )
        info = await self.finisher.recover(info)
        headers = self._base_headers(info)
        headers["Upload-Offset"] = str(await asyncio.to_thread(self.store.offset, info))
        if info.length is None:
            headers["Upload-Defer-Length"] = "1"
        else:
            headers["Upload-Length"] = str(info.length)
        if info.metadata:
            headers["Upload-Metadata"] = h.encode_metadata(info.metadata)
        return web.Response(status=200, headers=headers)

    async def patch(self, request: web.Request) -> web.Response:
        info, _ = await self._find(request, operator_ok=False)
        info = await self.finisher.recover(info)
        if request.content_type != OCTET:
            raise UnsupportedMediaType(f"PATCH needs Content-Type {OCTET}")
        given = request.headers
        claimed = h.parse_non_negative("Upload-Offset", h.single(given, "Upload-Offset"))
        upload_length = h.parse_non_negative("Upload-Length", h.single(given, "Upload-Length"))
        checksum = h.parse_checksum(h.single(given, "Upload-Checksum"))
        async with self.store.writing(info.upload_id):  # 423 when another request writes it
            info = require_found(
                await self.store.load(info.upload_id), info.upload_id, self.store.clock()
            )
            if claimed is None:
                raise BadRequest("Upload-Offset is required")
            info, offset = await self._write(request, info, claimed, checksum, upload_length)
        headers = self._base_headers(info)
        headers["Upload-Offset"] = str(offset)
        return web.Response(status=204, headers=headers)

    async def delete(self, request: web.Request) -> web.Response:
        info, _ = await self._find(request, operator_ok=True)
        if await self.store.busy(info.upload_id):
            raise Locked("a request is writing this upload", headers={"Retry-After": "1"})
        await self.store.remove(info.upload_id)
        return web.Response(status=204, headers={"Tus-Resumable": h.TUS_VERSION})

    async def head_blob(self, request: web.Request) -> web.Response:
        principal = principal_of(request)
        sha256 = request.match_info["sha256"]
        if not is_sha256(sha256):
            raise BadRequest("blob id must be 64 lowercase hex digits")
        held = await asyncio.to_thread(self.blobs.has, sha256)
        catalog = request.app.get(CATALOG)  # None: the tus layer mounted alone (its tests)
        if held and catalog is not None and not principal.is_operator and principal.device_id:
            # a device learns only of its own blobs, never of another site's
            held = await catalog.device_uploaded_blob(principal.device_id, sha256)
        return web.Response(status=200 if held else 404, headers={"Cache-Control": "no-store"})

    async def _settle(self, upload_id: str) -> None:
        """Wait (briefly) for a PATCH still writing this upload, so HEAD reports the
        offset that request leaves, not one it is about to move: a client resuming
        after a cut sends HEAD while the server may not have seen the cut yet.
        With shared state the writer may be another instance: its lease is awaited."""
        lock = self.store.lock(upload_id)
        try:
            async with asyncio.timeout(HEAD_SETTLE_S):
                if lock.locked():
                    async with lock:
                        pass
                await self.store.settled(upload_id)
        except TimeoutError:
            raise Locked(
                "another request is writing this upload", headers={"Retry-After": "1"}
            ) from None

    # ---------------------------------------------------------------- writing
    async def _write(
        self,
        request: web.Request,
        info: UploadInfo,
        claimed: int,
        checksum: h.Checksum | None,
        upload_length: int | None,
    ) -> tuple[UploadInfo, int]:
        """Write one body under the upload's lock; finish the upload when complete."""
        current = await self.store.current_offset(info)
        plan = plan_patch(
            info,
            current,
            claimed_offset=claimed,
            content_length=request.content_length,
            upload_length=upload_length,
            max_size=self.store.max_size,
        )
        if plan.new_length is not None:
            info = info.with_length(plan.new_length)
            await self.store.persist(info)
        whole = None
        if info.metadata.get("sha256"):
            whole = self.store.digests.at(info.upload_id, plan.offset)
        offset = await receive_body(
            self.store,
            info.upload_id,
            request.content,
            plan,
            checksum,
            content_length=request.content_length,
            whole=whole,
        )
        info = await self.store.keep_alive(info)
        if info.length is not None and offset == info.length:
            info = await self.finisher.finish(info)
        return info, offset


def _versioned(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Refuse requests without ``Tus-Resumable: 1.0.0`` (412 + Tus-Version)."""

    async def checked(request: web.Request) -> web.Response:
        if request.headers.get("Tus-Resumable") != h.TUS_VERSION:
            raise PreconditionFailed(
                "Tus-Resumable: 1.0.0 is required",
                headers={"Tus-Version": h.TUS_VERSION, "Tus-Resumable": h.TUS_VERSION},
            )
        return await handler(request)

    return checked


async def _add_tus_resumable(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith(UPLOADS):
        response.headers.setdefault("Tus-Resumable", h.TUS_VERSION)


def add_tus_routes(
    app: web.Application, store: UploadStore, blobs: BlobStore, on_complete: OnComplete
) -> None:
    """Mount ``/v1/uploads/``, ``/v1/uploads/{upload_id}`` and ``HEAD /v1/blobs/{sha256}``."""
    t = _TusHandlers(store, blobs, on_complete)
    for path in (UPLOADS, f"{UPLOADS}/"):
        app.router.add_route("OPTIONS", path, t.options)
        app.router.add_post(path, _versioned(t.create))
    item = f"{UPLOADS}/{{upload_id}}"
    app.router.add_route("OPTIONS", item, t.options)
    app.router.add_route("HEAD", item, _versioned(t.head))
    app.router.add_patch(item, _versioned(t.patch))
    app.router.add_delete(item, _versioned(t.delete))
    app.router.add_route("HEAD", "/v1/blobs/{sha256}", t.head_blob)
    app.on_response_prepare.append(_add_tus_resumable)
