"""The explorer's FastAPI app: HTML pages and, behind each, a JSON API (OpenAPI at /api/docs).

Only GET routes: the app reads the ledger with SQLite ``mode=ro`` and never writes. Every
string reaches a page through Jinja's autoescaping or the DOM's ``textContent``, and a
Content-Security-Policy refuses inline scripts. Errors become a page (or JSON under /api)
with a status code and one line: never a traceback.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader
from starlette.background import BackgroundTask
from starlette.middleware.trustedhost import TrustedHostMiddleware

from dlbc_ray.errors import DLBCError
from dlbc_ray.explorer import reader
from dlbc_ray.explorer.errors import ExplorerError, as_explorer_error, install_error_pages, read, scrub
from dlbc_ray.explorer.live import LiveState
from dlbc_ray.runtime.home import Home

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(home: Home, live: LiveState | None = None, *, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The explorer for ``home``; ``live`` carries the running network's state (empty when none is watched)."""
    live = live or LiveState()
    app = FastAPI(title="dlbc-ray explorer", summary="Read-only views of a dlbc-ray chain and its live network.",
                  docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.state.home, app.state.live = home, live
    templates = Jinja2Templates(env=Environment(loader=PackageLoader("dlbc_ray.explorer", "templates"),
                                                autoescape=True))
    app.mount("/static", StaticFiles(packages=[("dlbc_ray.explorer", "static")]), name="static")
    app.include_router(api_routes(home, live))
    app.include_router(page_routes(home, live, templates))
    install_error_pages(app, templates, home)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        if not request.url.path.startswith("/api/docs"):
            response.headers.update(SECURITY_HEADERS)
        return response

    return app


# ---------------------------------------------------------------------- data


def task_view(home: Home, live: LiveState, task_id: str) -> dict[str, Any]:
    """The task as the ledger knows it, with what the live network says; a task still mining is live only."""
    try:
        info = read(home, reader.task_detail, task_id)
    except ExplorerError as e:
        running = [r for r in live.snapshot()["rounds"] if r["task_id"].startswith(task_id)] if len(task_id) >= 8 else []
        if e.status != 404 or not running:
            raise
        info = {"task_id": running[0]["task_id"], "status": "mining", "spec": None, "submissions": [],
                "model_available": False}
    full = info["task_id"]
    network, _ = live.network()
    queue = [q for q in (network or {}).get("queue", []) if q.get("task_id") == full]
    info["live"] = {"round": next((r for r in live.snapshot()["rounds"] if r["task_id"] == full), None),
                    "curve": live.curve(full), "report": live.report(full), "queue": queue[0] if queue else None}
    return info


def network_view(home: Home, live: LiveState) -> dict[str, Any]:
    """``dlbc-ray status --json``'s object under ``status`` when a network answers, else why not."""
    status, detail = live.network()
    snapshot = live.snapshot()
    return {"up": snapshot["up"], "source": snapshot["source"], "detail": scrub(detail, home) if detail else detail,
            "status": status,
            "rounds": snapshot["rounds"]}


def charts_view(home: Home, live: LiveState) -> dict[str, Any]:
    from dlbc_ray.runtime.plots import time_split
    from dlbc_ray.schema.round_messages import RoundReport

    data = read(home, reader.charts)
    times = []
    for dump in live.reports():
        r = RoundReport.model_validate(dump)
        if r.committed and r.height is not None:
            train, evaluate, other = time_split(r)
            times.append({"height": r.height, "train_s": train, "eval_s": evaluate, "other_s": other})
    data["round_times"] = sorted(times, key=lambda t: t["height"])
    return data


def head(home: Home) -> dict[str, Any] | None:
    try:
        return read(home, lambda ledger: {"height": ledger.chain.height, "hash": ledger.chain.state.head_hash})
    except ExplorerError:
        return None


# ---------------------------------------------------------------------- API


def api_routes(home: Home, live: LiveState) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["api"])
    Height = PathParam(ge=0, le=2**62, description="block height")

    @api.get("/chain", summary="Every block, oldest first (the rows of `dlbc-ray chain show --json`)")
    def chain() -> list[dict[str, Any]]:
        return read(home, reader.chain_rows)

    @api.get("/blocks/{height}", summary="One block: header, transactions, submissions with their votes, "
                                         "evidence, payouts, and whether it re-verifies")
    def block(height: int = Height) -> dict[str, Any]:
        return read(home, reader.block_detail, height)

    @api.get("/tasks", summary="Tasks on chain, newest first")
    def tasks() -> list[dict[str, Any]]:
        return read(home, reader.task_list)

    @api.get("/tasks/{task_id}", summary="A task: `dlbc-ray result --json`'s fields, its spec, its round's "
                                        "submissions, and its live round and curve")
    def task(task_id: str) -> dict[str, Any]:
        return task_view(home, live, task_id)

    @api.get("/tasks/{task_id}/model", summary="The delivered model as safetensors that work on raw inputs",
             response_class=FileResponse)
    def model(task_id: str) -> FileResponse:
        return model_file(home, task_id)

    @api.get("/accounts", summary="Balances and escrow (`dlbc-ray balance --json`'s shape)")
    def accounts() -> dict[str, Any]:
        return read(home, reader.balances)

    @api.get("/accounts/{account}", summary="One account's balance and history (key or key name)")
    def account(account: str) -> dict[str, Any]:
        return read(home, reader.account_history, account)

    @api.get("/network", summary="Members, health, resources and rounds in flight (`dlbc-ray status --json`)")
    def network() -> dict[str, Any]:
        return network_view(home, live)

    @api.get("/charts", summary="Accuracy per block, intervals and difficulty, contribution shares, round times")
    def charts() -> dict[str, Any]:
        return charts_view(home, live)

    @api.get("/live", summary="The chain head and rounds in flight; pages poll it")
    def live_now() -> dict[str, Any]:
        return {"head": head(home), **live.snapshot()}

    return api


def model_file(home: Home, task_id: str) -> FileResponse:
    """Export the winner's model to a temporary file (never into the home) and send it."""
    info = read(home, reader.task_detail, task_id)
    if not info["model_available"]:
        raise ExplorerError(404, "not_found", f"task {task_id[:16]} has no delivered model in this home")
    from dlbc_ray.runtime.client import export_model
    from dlbc_ray.schema import Task

    folder = Path(tempfile.mkdtemp(prefix="dlbc-explorer-"))
    target = folder / f"{info['task_id'][:16]}.safetensors"
    try:
        export_model(home, Task.model_validate(info["spec"]), info["model_hash"], target)
    except DLBCError as e:
        raise as_explorer_error(e) from None
    return FileResponse(target, filename=target.name, media_type="application/octet-stream",
                        background=BackgroundTask(_remove, folder))


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------- pages


def page_routes(home: Home, live: LiveState, templates: Jinja2Templates) -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        data = {"page": name.removesuffix(".html"), **context.pop("page_data", {})}
        return templates.TemplateResponse(request, name, {"head": head(home), "page_data": data,
                                                          "live": live.snapshot(), **context})

    @pages.get("/", response_class=HTMLResponse)
    def chain(request: Request) -> HTMLResponse:
        return page(request, "chain.html", rows=read(home, reader.chain_rows)[::-1])

    @pages.get("/blocks/{height}", response_class=HTMLResponse)
    def block(request: Request, height: int = PathParam(ge=0, le=2**62)) -> HTMLResponse:
        return page(request, "block.html", b=read(home, reader.block_detail, height))

    @pages.get("/tasks", response_class=HTMLResponse)
    def tasks(request: Request) -> HTMLResponse:
        status, _ = live.network()
        return page(request, "tasks.html", tasks=read(home, reader.task_list), queue=(status or {}).get("queue", []))

    @pages.get("/tasks/{task_id}", response_class=HTMLResponse)
    def task(request: Request, task_id: str) -> HTMLResponse:
        info = task_view(home, live, task_id)
        return page(request, "task.html", t=info, page_data={"task_id": info["task_id"]})

    @pages.get("/accounts", response_class=HTMLResponse)
    def accounts(request: Request) -> HTMLResponse:
        return page(request, "accounts.html", a=read(home, reader.balances))

    @pages.get("/accounts/{account}", response_class=HTMLResponse)
    def account(request: Request, account: str) -> HTMLResponse:
        return page(request, "account.html", a=read(home, reader.account_history, account))

    @pages.get("/network", response_class=HTMLResponse)
    def network(request: Request) -> HTMLResponse:
        return page(request, "network.html", n=network_view(home, live))

    @pages.get("/charts", response_class=HTMLResponse)
    def charts(request: Request) -> HTMLResponse:
        return page(request, "charts.html", c=charts_view(home, live))

    return pages

