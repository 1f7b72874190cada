"""What a request could not get, as a page (or JSON under /api) with a status, a code and one line.

Never a traceback, and never where the home lives on this machine: a visitor of the explorer
learns the chain, not the operator's file system (``scrub``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from dlbc_ray.errors import CorruptLedger, DLBCError
from dlbc_ray.explorer import reader
from dlbc_ray.runtime.home import Home

log = logging.getLogger(__name__)
T = TypeVar("T")
NOT_FOUND_REASONS = {"missing", "unknown_task", "unknown_account"}
UNAVAILABLE_REASONS = {"missing_ledger", "empty"}


class ExplorerError(Exception):
    """What a request could not get: an HTTP status, a stable code and one line for the user."""

    def __init__(self, status: int, code: str, detail: str, height: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.height = status, code, detail, height

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.height is not None:
            body["height"] = self.height
        return body


def as_explorer_error(error: DLBCError) -> ExplorerError:
    reason = error.reason or ""
    height = getattr(error, "height", None)
    if reason in UNAVAILABLE_REASONS:
        return ExplorerError(503, "ledger_unavailable", str(error), height)
    if reason in NOT_FOUND_REASONS:
        return ExplorerError(404, "not_found", str(error))
    if isinstance(error, CorruptLedger):
        return ExplorerError(500, "corrupt_ledger", f"the ledger cannot be read: {error}", height)
    return ExplorerError(500, reason or "ledger_error", str(error), height)


def read(home: Home, fn: Callable[..., T], *args: Any) -> T:
    """``fn(ledger, *args)`` on the home's ledger opened read-only; ledger errors become ExplorerError."""
    try:
        with reader.open_ledger(home) as ledger:
            return fn(ledger, *args)
    except DLBCError as e:
        raise as_explorer_error(e) from None
    except sqlite3.DatabaseError as e:
        raise ExplorerError(500, "corrupt_ledger", f"the ledger cannot be read: {e}") from None


def scrub(text: str, home: Home) -> str:
    """``text`` with the home's path on this machine replaced by ``<home>``."""
    for root in sorted({str(home.root), str(Path(home.root).resolve())}, key=len, reverse=True):
        text = text.replace(root, "<home>")
    return text


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/api"


def install_error_pages(app: FastAPI, templates: Jinja2Templates, home: Home) -> None:
    def render(request: Request, error: ExplorerError) -> Response:
        error.detail = scrub(error.detail, home)
        if wants_json(request):
            return JSONResponse(error.body(), status_code=error.status)
        return templates.TemplateResponse(request, "error.html", {"error": error, "head": None, "page_data":
                                          {"page": "error", "code": error.code}, "live": None},
                                          status_code=error.status)

    @app.exception_handler(ExplorerError)
    async def explorer_error(request: Request, exc: ExplorerError) -> Response:
        return render(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "http_error"
        detail = f"no page at {request.url.path[:200]}" if exc.status_code == 404 else str(exc.detail)
        return render(request, ExplorerError(exc.status_code, code, detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        if wants_json(request):
            first = exc.errors()[0] if exc.errors() else {}
            where = ".".join(str(p) for p in first.get("loc", ()))
            return render(request, ExplorerError(422, "bad_request", f"{where}: {first.get('msg', 'invalid')}"))
        return render(request, ExplorerError(404, "not_found", f"no page at {request.url.path[:200]}"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("explorer: unexpected %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
        return render(request, ExplorerError(500, "internal_error", f"unexpected {type(exc).__name__}; the "
                                                                    "explorer's log has the details"))
