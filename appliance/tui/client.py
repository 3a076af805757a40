"""An async client of the appliance's local API with the technician token.

The TUI and ``yardlink appliance status|check|support-bundle`` talk to the
daemon only through this (never the outbox or the models).  Every failure is
one of two typed errors: :class:`ApplianceUnreachable` (retryable: nothing
answered, or not in time) and :class:`ApplianceRefused` (the API answered
with an error status; its message is the API's).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp

from appliance.errors import ApplianceError

__all__ = ["ApplianceClient", "ApplianceRefused", "ApplianceUnreachable", "DEFAULT_URL"]

DEFAULT_URL = "http://127.0.0.1:8477"
_SSE_MAX_LINE = 1 << 20
_ROLLBACK_TIMEOUT_S = 120.0  # a rollback answers once the previous model serves


class ApplianceUnreachable(ApplianceError):
    """Nothing answered at the local API (stopped, restarting, wrong address)."""

    retryable = True


class ApplianceRefused(ApplianceError):
    """The local API answered with an error (wrong token, bad request, action refused)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code = status, code


class ApplianceClient:
    """``url`` is ``http://host:port`` or ``unix:/path/to/socket``; close with ``close()``."""

    def __init__(
        self, url: str, token: str | None, *, timeout_s: float = 5.0, label: str | None = None
    ) -> None:
        self.url = label or url  # shown to the technician (``label``: a stable name)
        self._unix = url[len("unix:") :] if url.startswith("unix:") else None
        self._base = "http://localhost" if self._unix else url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApplianceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = (
                aiohttp.UnixConnector(path=self._unix) if self._unix else aiohttp.TCPConnector()
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout
            )
        return self._session

    async def _call(
        self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None
    ) -> bytes:
        """``timeout_s``: for a call that does real work (a model load), not the default."""
        timeout = self._timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self._http().request(
                method, self._base + path, json=body, timeout=timeout
            ) as answer:
                data = await answer.read()
                if answer.status >= 400:
                    raise _refused(answer.status, data)
                return data
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApplianceUnreachable(
                f"the appliance at {self.url} does not answer: {type(exc).__name__}"
                f"{': ' + str(exc) if str(exc) else ''}"
            ) from exc

    async def _json(
        self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None
    ) -> Any:
        data = await self._call(method, path, body, timeout_s=timeout_s)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ApplianceRefused(200, "not_json", f"{path} answered with no JSON") from exc

    async def status(self) -> Any:
        return await self._json("GET", "/v1/status")

    async def sync(self) -> Any:
        return await self._json("GET", "/v1/sync")

    async def audit(self) -> Any:
        return await self._json("GET", "/v1/audit")

    async def metrics(self) -> str:
        return (await self._call("GET", "/metrics")).decode("utf-8", "replace")

    async def sync_now(self) -> Any:
        return await self._json("POST", "/v1/sync/now")

    async def pause(self) -> Any:
        return await self._json("POST", "/v1/sync/pause")

    async def resume(self) -> Any:
        return await self._json("POST", "/v1/sync/resume")

    async def set_bandwidth_cap(self, bps: float | None, for_s: float | None = None) -> Any:
        body: dict[str, Any] = {"bps": bps}
        if for_s is not None:
            body["for_s"] = for_s
        return await self._json("PUT", "/v1/sync/bandwidth", body)

    async def models(self) -> Any:
        """``GET /v1/models`` (404 when model updates are off: ApplianceRefused)."""
        return await self._json("GET", "/v1/models")

    async def rollback_model(self, task: str, reason: str) -> Any:
        """The answer comes once the previous model is loaded and serving: that may take
        a while on a busy gateway, so this call waits longer than a status read."""
        return await self._json(
            "POST",
            f"/v1/models/{quote(task, safe='')}/rollback",
            {"reason": reason},
            timeout_s=_ROLLBACK_TIMEOUT_S,
        )

    async def support_bundle(self) -> bytes:
        return await self._call("POST", "/v1/support-bundle")

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Server-sent events of ``/v1/events`` (one dict per durable task result)."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=60.0)
        try:
            async with self._http().get(self._base + "/v1/events", timeout=timeout) as answer:
                if answer.status >= 400:
                    raise _refused(answer.status, await answer.read())
                async for line in answer.content:
                    if len(line) > _SSE_MAX_LINE or not line.startswith(b"data: "):
                        continue
                    try:
                        event = json.loads(line[6:])
                    except ValueError:
                        continue
                    if isinstance(event, dict):
                        yield event
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApplianceUnreachable(
                f"the event stream of {self.url} broke: {type(exc).__name__}"
            ) from exc


def _refused(status: int, data: bytes) -> ApplianceRefused:
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("message", body.get("detail"))  # the API's two error shapes
        return ApplianceRefused(status, str(body.get("error")), str(message))
    return ApplianceRefused(status, "http_error", data[:200].decode("utf-8", "replace"))
