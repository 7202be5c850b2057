"""What stands between a client and the routes: the API key, strict JSON bodies, bounded validation errors.

- With an API key set, every path but /health answers 401 unless the request
  carries the key (``X-API-Key: KEY`` or ``Authorization: Bearer KEY``),
  compared in constant time; the key is never logged or echoed.
- Bodies are JSON as RFC 8259 defines it: UTF-8, no ``NaN``/``Infinity``
  (which Python's parser accepts and no JSON encoder can echo back), no number
  beyond a float's range; anything else is a 400 saying why.
- Validation errors (422) echo each invalid input only when it is short and
  JSON-safe, otherwise a truncated text of it, so an error never costs more
  than the request and never fails to serialise.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/health"})
MAX_ECHO_CHARS = 200
UNAUTHORIZED = "missing or wrong API key: send it as X-API-Key or Authorization: Bearer"


def presented_key(headers: Headers) -> str | None:
    """The key a request carries, from X-API-Key or a Bearer Authorization header."""
    if key := headers.get("x-api-key"):
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison, so the answer's timing says nothing about the key."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


class ApiKeyMiddleware:
    """Answers 401 to any request without the key, before its body is read, except on OPEN_PATHS."""

    def __init__(self, app: ASGIApp, key: str, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self.key = key
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] not in self.open_paths
            and not key_matches(presented_key(Headers(scope=scope)), self.key)
        ):
            response = JSONResponse({"detail": UNAUTHORIZED}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _not_a_number(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond the range of a float")
    return value


def parse_json(body: bytes) -> Any:
    """A JSON body as RFC 8259 defines it (UTF-8, finite numbers); ValueError or RecursionError otherwise."""
    return json.loads(body.decode("utf-8"), parse_constant=_not_a_number, parse_float=_finite)


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = parse_json(await self.body())
            except (ValueError, RecursionError) as exc:
                message = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise HTTPException(status_code=400, detail=f"The body is not JSON: {message}") from exc
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is parsed by `parse_json` (FastAPI's documented custom-request hook)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


def echo(value: Any, limit: int = MAX_ECHO_CHARS) -> Any:
    """`value` itself when its JSON is short and standard, else a truncated text of it."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        text = None
    if text is not None and len(text) <= limit:
        return value
    shown = value if isinstance(value, str) else text if text is not None else repr(value)
    return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(shown)} characters)"


def validation_errors(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's validation errors reduced to JSON-safe, bounded fields."""
    out = []
    for error in errors:
        item = {"type": error.get("type"), "loc": list(error.get("loc", ())), "msg": echo(error.get("msg"), 500)}
        if "input" in error:
            item["input"] = echo(error["input"])
        if error.get("ctx"):
            item["ctx"] = {
                k: echo(v if isinstance(v, int | float | str | bool) else str(v)) for k, v in error["ctx"].items()
            }
        out.append(item)
    return out


async def validation_error_response(request: Request, exc: RequestValidationError) -> Response:
    """422 with bounded echoes, encoded as ASCII (a lone surrogate in a string cannot break the encoding)."""
    body = json.dumps({"detail": validation_errors(exc.errors())}, allow_nan=False)
    return Response(body, status_code=422, media_type="application/json")
