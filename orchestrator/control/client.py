"""The control API's client: what the commands use to talk to a running daemon.

It speaks HTTP over the daemon's Unix socket (or, given an address and the token, over TCP)
with the models of :mod:`orchestrator.control.api`. Errors become the package's errors with
their exit statuses: a daemon that does not answer is a :class:`ControlError`, an unknown
ref a :class:`RefError`, a refused order a :class:`ControlError` naming the reason.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from httpx_sse import connect_sse
from pydantic import BaseModel, ValidationError

from ..errors import ControlError, DaemonUnreachableError, RefError, UsageError
from . import api

M = TypeVar("M", bound=BaseModel)

TIMEOUT = 60.0
"""Seconds to wait for an answer (an order that ends an attempt waits for its processes)."""
SOCKET_PATH_MAX = 100


class Client:
    """One connection to a daemon's control API."""

    def __init__(
        self,
        transport: httpx.BaseTransport,
        base_url: str,
        where: str,
        token: str | None = None,
        cleanup: Any = None,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.where = where
        # trust_env=False: an HTTP_PROXY in the environment must not divert the daemon's socket.
        self._http = httpx.Client(
            transport=transport,
            base_url=base_url,
            headers=headers,
            timeout=TIMEOUT,
            trust_env=False,
        )
        self._cleanup = cleanup

    @classmethod
    def unix(cls, state_dir: Path) -> Client:
        """The daemon of ``state_dir``, over its socket."""
        path = state_dir / api.SOCKET_NAME
        cleanup = None
        address = str(path)
        if len(os.fsencode(address)) > SOCKET_PATH_MAX and sys.platform.startswith("linux"):
            fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
            address = f"/proc/self/fd/{fd}/{api.SOCKET_NAME}"
            cleanup = fd
        # No TLS on a Unix socket: verify=False spares loading the CA bundle (30 ms).
        transport = httpx.HTTPTransport(uds=address, verify=False)
        return cls(transport, "http://orchestratord", str(path), cleanup=cleanup)

    @classmethod
    def tcp(cls, url: str, token: str | None = None) -> Client:
        return cls(httpx.HTTPTransport(), url, url, token=token)

    def close(self) -> None:
        self._http.close()
        if isinstance(self._cleanup, int):
            with contextlib.suppress(OSError):
                os.close(self._cleanup)
            self._cleanup = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            body = api.ErrorBody.model_validate_json(response.read())
            message, kind = body.error, body.kind
        except ValidationError:
            message, kind = f"HTTP {response.status_code} from the daemon", "error"
        if kind == "not_found":
            raise RefError(message)
        if kind == "bad_request":
            raise UsageError(message)
        raise ControlError(message)

    def _unreachable(self, exc: httpx.TransportError) -> DaemonUnreachableError:
        problem = str(exc) or type(exc).__name__
        return DaemonUnreachableError(f"the daemon does not answer on {self.where}: {problem}")

    def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> httpx.Response:
        content = None
        if body is not None:
            content = body.model_dump_json() if isinstance(body, BaseModel) else orjson.dumps(body)
        try:
            response = self._http.request(
                method,
                path,
                params={k: v for k, v in (params or {}).items() if v is not None},
                content=content,
                headers={"content-type": "application/json"} if content is not None else None,
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        self._raise_for(response)
        return response

    def _get(self, path: str, model: type[M], **params: Any) -> M:
        return model.model_validate_json(self.request("GET", path, params=params).content)

    def _post(self, path: str, model: type[M], body: BaseModel) -> M:
        return model.model_validate_json(self.request("POST", path, body=body).content)

    def _document(self, path: str, model: type[BaseModel], **params: Any) -> dict[str, Any]:
        """A document as the daemon sent it, after checking it against its model."""
        data: dict[str, Any] = orjson.loads(self.request("GET", path, params=params).content)
        model.model_validate(data)
        return data

    # ------------------------------------------------------------------ reading

    def ping(self) -> api.Ping:
        return self._get(api.PING, api.Ping)

    def status(self, track: str | None = None) -> dict[str, Any]:
        return self._document(api.STATUS, api.StatusDocument, track=track)

    def task(self, ref: str) -> dict[str, Any]:
        return self._document(api.TASK, api.TaskDetail, ref=ref)

    def explain(self, ref: str) -> api.Explanation:
        return self._get(api.EXPLAIN, api.Explanation, ref=ref)

    def board(self) -> dict[str, Any]:
        return self._document(api.BOARD, api.BoardDocument)

    def board_markdown(self) -> str:
        return self.request("GET", api.BOARD_MARKDOWN).text

    def metrics(self) -> str:
        return self.request("GET", api.METRICS).text

    @contextlib.contextmanager
    def log(
        self, ref: str, attempt: int | None = None, *, follow: bool = False, tail: int | None = None
    ) -> Iterator[tuple[int, Iterator[bytes]]]:
        """(attempt number, the log's bytes as they come); with ``follow``, until it ends."""
        params = {"ref": ref, "attempt": attempt, "tail": tail, "follow": "1" if follow else None}
        timeout = httpx.Timeout(TIMEOUT, read=None if follow else TIMEOUT)
        try:
            with self._http.stream(
                "GET",
                api.LOG,
                params={k: v for k, v in params.items() if v is not None},
                timeout=timeout,
            ) as response:
                self._raise_for(response)
                number = int(response.headers.get("x-attempt", "0"))
                yield number, response.iter_bytes()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def events(self, since: int | None = None) -> Iterator[dict[str, Any]]:
        """Every event after ``since`` (default: from now on), as they come."""
        params = {"since": since} if since is not None else {}
        timeout = httpx.Timeout(TIMEOUT, read=None)
        try:
            with connect_sse(self._http, "GET", api.EVENTS, params=params, timeout=timeout) as src:
                self._raise_for(src.response)
                for sse in src.iter_sse():
                    if sse.data:
                        yield orjson.loads(sse.data)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    # ------------------------------------------------------------------ orders

    def order(self, ref: str, order: api.Order) -> api.OrderResult:
        return self._post(api.ORDER, api.OrderResult, api.OrderRequest(ref=ref, order=order))

    def pause(self, track: str | None = None, reason: str | None = None) -> api.PauseResult:
        return self._post(api.PAUSE, api.PauseResult, api.PauseRequest(track=track, reason=reason))

    def resume(self, track: str | None = None) -> api.PauseResult:
        return self._post(api.RESUME, api.PauseResult, api.PauseRequest(track=track))

    def reload(self) -> api.ReloadResult:
        return api.ReloadResult.model_validate_json(
            self.request("POST", api.RELOAD, body={}).content
        )

    def stop(self, force: bool = False) -> api.StopResult:
        return self._post(api.STOP, api.StopResult, api.StopRequest(force=force))
