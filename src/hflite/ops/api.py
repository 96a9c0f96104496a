"""The control API (FastAPI): kill switch, pause, close-all, resume, and every read a user needs.

Served by ``hflite run --api`` (in a thread of the trading process) or ``hflite serve`` (alone, next
to a runtime or none). Either way it reads and writes the run's journal only (``ops.state.RunView``):
a command is queued there with its source (``api``) and the runtime applies it at its next bar-time,
exactly like ``hflite risk``; while no runtime runs, every answer says so.

Security (docs/operating.md):
- a bearer token from ``.env`` (``[api] token_env``, default ``HFLITE_API_TOKEN``), compared in
  constant time, on every route but ``/health``;
- loopback by default; another address needs a TLS certificate, or ``insecure_remote`` (a warning);
- ``kill`` and ``close_all`` need ``confirm: true``;
- control routes and reads are rate-limited per client (``limits``, a moving window): 429 with
  ``Retry-After``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations (``Wait`` is
# local to ``create_app``) when each route is declared.
import asyncio
import hmac
import ipaddress
import json
import math
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, ConfigDict, Field

from hflite import logs
from hflite.ops.state import NoJournal, RunView

if TYPE_CHECKING:
    from hflite.config import ApiConfig

MIN_TOKEN_LEN = 16


class ApiError(ValueError):
    """The API cannot start as configured (no token, a remote address without TLS...)."""


# -- request and response models (the OpenAPI schema schemathesis checks) ----------------------------
class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500, description="why: kept in the journal and the report")


class ConfirmBody(BaseModel):
    """kill and close_all flatten every position: the body must say ``"confirm": true``."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=500, description="why: kept in the journal and the report")
    confirm: Literal[True] = Field(description="must be true: it flattens every position")


class CommandAnswer(BaseModel):
    seq: int
    action: str
    live: bool = Field(description="a runtime is live: the command applies at its next bar-time")
    runtime: str
    message: str
    applied_at: str | None = Field(None, description="the bar-time it took effect at (when waited for)")


class Problem(BaseModel):
    detail: str


class LimitRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    value: float | None
    limit: float | None
    unit: str = ""
    utilisation: float | None
    breached: bool = False
    detail: str = ""


class RiskCheck(BaseModel):
    runtime: str
    live: bool
    bar_ts: str | None
    mode: str
    mode_reason: str
    halted: bool
    halt_reason: str
    trading_halted: str
    locks: dict[str, str]
    paused_symbols: dict[str, str]
    global_pause: str
    limits: list[LimitRow]
    drawdown: float | None
    gross_exposure: float | None
    net_exposure: float | None
    pnl: dict[str, float | None]
    breakers: list[dict[str, Any]]
    verdicts: dict[str, int]
    unexplained_differences: list[dict[str, Any]]


class Status(BaseModel):
    model_config = ConfigDict(extra="allow")
    run_id: str
    runtime: str = Field(
        description="live | halted | recovering | starting | silent | stopped | not running | never ran"
    )
    live: bool
    detail: str


class Position(BaseModel):
    symbol: str
    qty: float
    avg_price: float | None
    last: float | None
    value: float | None
    unrealized_pnl: float | None


class OrderRow(BaseModel):
    id: str
    symbol: str
    side: str
    type: str
    qty: float | None
    filled_qty: float | None
    avg_fill_price: float | None
    price: float | None
    status: str
    created: str | None
    created_ts: int
    reason: str
    decision_id: str


class TradeRow(BaseModel):
    symbol: str
    direction: str
    qty: float | None
    entry: str | None
    entry_price: float | None
    exit: str | None
    exit_price: float | None
    pnl: float | None
    fees: float | None
    net_pnl: float | None
    entry_reason: str
    exit_reason: str


class EquityPoint(BaseModel):
    bar_ts: str | None
    equity: float | None


class Health(BaseModel):
    alive: bool
    ready: bool
    runtime: str
    checks: dict[str, dict[str, Any]]


class Decision(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    source: str


# -- security ----------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_bind(host: str, tls: bool, insecure_remote: bool) -> str | None:
    """None when ``host`` may be served; else why not. A warning text when insecure_remote allows it."""
    if is_loopback(host) or tls:
        return None
    if insecure_remote:
        return (
            f"WARNING: serving the control API on {host} without TLS: anyone on the network who sees the "
            "token can kill the run"
        )
    raise ApiError(
        f"refusing to serve the control API on non-loopback address {host} without TLS: set [api] tls_cert "
        "and tls_key, or pass --insecure-remote (a warning) behind a TLS proxy or on a private network"
    )


def read_token(env_name: str, env: dict[str, str]) -> str:
    token = env.get(env_name, "")
    if not token:
        raise ApiError(
            f"the control API needs a bearer token: set {env_name} in .env (e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if len(token) < MIN_TOKEN_LEN:
        raise ApiError(f"{env_name} is too short: use at least {MIN_TOKEN_LEN} random characters")
    from hflite import redact

    redact.register(token)
    return token


class _Limiter:
    """Moving-window rate limits per client and route group (``limits``)."""

    def __init__(self, control_per_minute: int, read_per_second: int) -> None:
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.items = {
            "control": RateLimitItemPerMinute(control_per_minute),
            "read": RateLimitItemPerSecond(read_per_second),
        }

    def __call__(self, group: str, client: str) -> tuple[int, str] | None:
        """None when allowed; else (seconds to wait, why)."""
        item = self.items[group]
        if self.limiter.hit(item, group, client):
            return None
        reset, _left = self.limiter.get_window_stats(item, group, client)
        wait = max(1, math.ceil(reset - time.time()))
        per = item.GRANULARITY.name
        why = f"rate limited: at most {item.amount} {group} requests per {per}; retry in {wait} s"
        return wait, why


#: The one route open without a token: liveness and readiness.
PUBLIC = frozenset({"/health"})
#: The API's own documentation (no state in it): open too while the API listens on loopback only (a
#: browser's Swagger UI fetches the schema without the token; "Authorize" then sends it); behind the
#: token like every other route once it listens on another address.
DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class _Guard:
    """The bearer token (constant-time compare) and the rate limits, as plain ASGI in front of the
    routes: checked before any routing work, and cheaper than a dependency per route."""

    def __init__(self, app: Any, token: str, limit: _Limiter, open_paths: frozenset[str] = PUBLIC) -> None:
        self.app = app
        self.open = open_paths
        self.expected = token.encode()
        self.limit = limit
        self.log = logs.get("hflite.api")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.open:
            await self.app(scope, receive, send)
            return
        auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, given = auth.partition(b" ")
        client = scope["client"][0] if scope.get("client") else "?"
        if scheme.lower() != b"bearer" or not given or not hmac.compare_digest(given.strip(), self.expected):
            self.log.warning("api.unauthorised", client=client, path=scope["path"])
            await _answer(send, 401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
            return
        refused = self.limit("control" if scope["method"] == "POST" else "read", client)
        if refused is not None:
            await _answer(send, 429, refused[1], {"Retry-After": str(refused[0])})
            return
        await self.app(scope, receive, send)


async def _answer(send: Any, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# -- the app -----------------------------------------------------------------------------------------
def create_app(  # noqa: C901 - one nested function per route
    view: RunView,
    token: str,
    *,
    config: "ApiConfig | None" = None,
    metrics: Any = None,
    on_command: Callable[[dict[str, Any]], None] | None = None,
    book_source: Callable[[], Any] | None = None,
    docs_open: bool = True,
    now_source: Callable[[], float | None] | None = None,
) -> FastAPI:
    """The API over ``view``'s journal. ``metrics`` (``ops.metrics.Metrics``) serves ``/metrics``; when
    no runtime feeds it in this process, each scrape reads the journal's book. ``on_command`` hears
    every command queued (the runtime's bus: an alert and a metric). ``book_source`` gives the book of
    the runtime in this process (``hflite run --api``): the gauges are set from it at scrape time,
    not on every bar; without it (``hflite serve``) each scrape reads the journal's book. ``docs_open``:
    the documentation routes need no token (``DOCS``: for an API on loopback only). ``now_source``: the
    session's clock when it is not the wall clock (a recorded feed), for the data-staleness gauges."""
    from hflite.config import ApiConfig

    cfg = config or ApiConfig()
    log = logs.get("hflite.api")
    limit = _Limiter(cfg.control_per_minute, cfg.read_per_second)
    app = FastAPI(
        title="HedgeFund-Lite control API",
        version="1",
        description="Kill switch, pause, close-all and resume for a running hflite runtime, and its state, "
        "read from its journal. Every route but /health needs `Authorization: Bearer <token>`.",
    )
    app.state.view = view
    app.state.metrics = metrics
    app.add_middleware(_Guard, token=token, limit=limit, open_paths=PUBLIC | DOCS if docs_open else PUBLIC)

    def openapi() -> dict[str, Any]:  # the bearer scheme on every route but the public ones
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)  # fmt: skip
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            for path, ops in schema["paths"].items():
                for op in ops.values():
                    if path not in PUBLIC:
                        op["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem, "description": "no or wrong bearer token"},
        429: {"model": Problem, "description": "rate limited (Retry-After says when to retry)"},
        503: {"model": Problem, "description": "no journal: no runtime has run on it yet"},
    }

    @app.exception_handler(NoJournal)
    async def _no_journal(_request: Request, exc: NoJournal) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ())]
        action = request.url.path.rsplit("/", 1)[1]
        if action in ("kill", "close_all") and ("confirm" in loc or loc == ["body"]):
            detail = f"{action} needs a JSON body with confirm: true (it flattens every position)"
            return JSONResponse({"detail": detail}, status_code=422)
        where = ".".join(loc)
        return JSONResponse(
            {"detail": f"bad request: {where}: {first.get('msg', 'invalid')}"}, status_code=422
        )

    async def _command(
        action: str, body: CommandBody | ConfirmBody | None, request: Request, wait: float
    ) -> CommandAnswer:
        client = request.client.host if request.client else "?"
        body = body or CommandBody()
        answer = view.command(action, body.reason, source="api")
        log.warning("api.command", action=action, seq=answer["seq"], client=client, live=answer["live"])
        if on_command is not None:
            on_command({**answer, "reason": body.reason, "source": "api"})
        applied = None
        if answer["live"] and wait > 0:
            deadline = time.monotonic() + wait
            while applied is None and time.monotonic() < deadline:
                applied = view.applied_at(answer["seq"])
                if applied is None:
                    await asyncio.sleep(0.05)
        return CommandAnswer(**answer, applied_at=applied)

    Wait = Annotated[float, Query(ge=0, le=30, description="seconds to wait for a live runtime to apply it")]
    control = {
        **errors,
        422: {"model": Problem, "description": "bad body (kill, close_all: confirm missing)"},
    }

    @app.post("/emergency/kill", response_model=CommandAnswer, responses=control, tags=["emergency"])
    async def kill(request: Request, body: ConfirmBody, wait: Wait = 0.0) -> CommandAnswer:
        """Cancel every order, flatten every position, stop the runtime once flat. Needs confirm: true."""
        return await _command("kill", body, request, wait)

    @app.post("/emergency/pause", response_model=CommandAnswer, responses=control, tags=["emergency"])
    async def pause(request: Request, body: CommandBody | None = None, wait: Wait = 0.0) -> CommandAnswer:
        """No new entries until resumed; exits, stops and targets keep working."""
        return await _command("pause", body, request, wait)

    @app.post("/emergency/close_all", response_model=CommandAnswer, responses=control, tags=["emergency"])
    async def close_all(request: Request, body: ConfirmBody, wait: Wait = 0.0) -> CommandAnswer:
        """Flatten every position with market orders and keep running. Needs confirm: true."""
        return await _command("close_all", body, request, wait)

    @app.post("/resume", response_model=CommandAnswer, responses=control, tags=["emergency"])
    async def resume(request: Request, body: CommandBody | None = None, wait: Wait = 0.0) -> CommandAnswer:
        """Lift a pause, a kill and the drawdown halt."""
        return await _command("resume", body, request, wait)

    @app.get("/emergency/risk_check", response_model=RiskCheck, responses=errors, tags=["emergency"])
    async def risk_check() -> Response:
        """Every limit with its current value and utilisation; halts, pauses, locks and breakers."""
        return _json(view.risk_check())

    @app.get("/status", response_model=Status, responses=errors, tags=["read"])
    async def status() -> Response:
        """Is the runtime live, halted or stopped; last bar-time, equity, positions, orders, risk."""
        return _json(view.status())

    @app.get("/positions", response_model=list[Position], responses=errors, tags=["read"])
    async def positions() -> Response:
        """Open positions at the last decided bar-time."""
        return _json(view.positions())

    @app.get("/orders", response_model=list[OrderRow], responses=errors, tags=["read"])
    async def orders(
        open: Annotated[bool, Query(description="only orders still working")] = False,  # noqa: A002
        last: Annotated[int, Query(ge=0, le=100_000, description="the newest N (0 = all)")] = 100,
    ) -> Response:
        """The run's orders, oldest first."""
        return _json(view.orders(open_only=open, last=last))

    @app.get("/trades", response_model=list[TradeRow], responses=errors, tags=["read"])
    async def trades(last: Annotated[int, Query(ge=0, le=100_000)] = 100) -> Response:
        """Closed round trips, oldest first."""
        return _json(view.trades(last))

    @app.get("/equity", response_model=list[EquityPoint], responses=errors, tags=["read"])
    async def equity(last: Annotated[int, Query(ge=0, le=1_000_000)] = 1000) -> Response:
        """Equity after each decided bar-time."""
        return _json(view.equity(last))

    @app.get(
        "/decisions/{decision_id}",
        response_model=Decision,
        responses={**errors, 404: {"model": Problem, "description": "no such decision"}},
        tags=["read"],
    )
    async def decision(decision_id: Annotated[str, PathParam(min_length=1, max_length=200)]) -> Response:
        """The explain trail of one decision (its intent id, or an order id it produced) as JSON."""
        found = view.decision(decision_id)
        if found is None:
            raise HTTPException(404, f"no decision or order {decision_id!r} in {view.path} or the reports")
        return _json(found)

    @app.get("/commands", responses=errors, tags=["read"])
    async def commands(last: Annotated[int, Query(ge=0, le=10_000)] = 50) -> Response:
        """Commands queued by the CLI, the API and Telegram, with their source and when they applied."""
        return _json(view.commands(last))

    @app.get("/alerts", responses=errors, tags=["read"])
    async def alerts(last: Annotated[int, Query(ge=0, le=10_000)] = 50) -> Response:
        """The alerts the runtime raised, newest last."""
        return _json(view.alerts(last))

    @app.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "alive but not ready"}},
        tags=["health"],
    )
    async def health(
        ready: Annotated[bool, Query(description="answer 503 unless ready (for load balancers)")] = False,
    ) -> Any:
        """Liveness (this answers) and readiness: a live runtime, a fresh feed, a connected venue and a
        clean reconciliation. No token needed; says nothing about positions."""
        body = view.health()
        if ready and not body["ready"]:
            return JSONResponse(body, status_code=503)
        return body

    @app.get("/metrics", responses=errors, tags=["metrics"], response_class=Response)
    async def metrics_route() -> Response:
        """Prometheus metrics (text exposition format)."""
        m = app.state.metrics
        if m is None:
            raise HTTPException(404, "metrics are off ([metrics] enabled = false)")
        if book_source is not None:  # the runtime is this process: it is up while this answers
            m.set_runtime_up(True)
            book = book_source()
        else:
            m.set_runtime_up(view.runtime().live)
            book = view.book() if view.exists() else None
        if book:
            m.on_book(book, book.get("risk_check"), now=now_source() if now_source is not None else None)
        data, ctype = m.render()
        return Response(data, media_type=ctype)

    return app


def _json(body: Any) -> Response:
    """An answer serialised once, here: the read routes' bodies are built from validated journal data
    (numbers finite or null), so the per-request model validation is skipped (schemathesis checks
    that every answer still conforms to the documented model)."""
    return Response(json.dumps(body, separators=(",", ":"), allow_nan=False), media_type="application/json")


class ApiServer:
    """uvicorn in a daemon thread (``hflite run --api``): never touches signals or the trading loop."""

    def __init__(
        self, app: FastAPI, host: str, port: int, *, cert: Path | None = None, key: Path | None = None
    ) -> None:
        import uvicorn

        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            ssl_certfile=str(cert) if cert else None,
            ssl_keyfile=str(key) if key else None,
            lifespan="off",
        )
        self.server = uvicorn.Server(self.config)
        self.scheme = "https" if cert else "http"
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> str:
        """Bind here (a taken port or a bad address is one clear error), then serve in a thread."""
        host, port = self.config.host, self.config.port
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
        except OSError as exc:
            if self.sock is not None:
                self.sock.close()
            raise ApiError(f"the control API cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="hflite-api", daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ApiError(f"the control API did not start on {self.config.host}:{self.config.port}")
            time.sleep(0.01)
        return self.url

    @property
    def url(self) -> str:
        port = self.sock.getsockname()[1] if self.sock is not None else self.config.port
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{self.scheme}://{host}:{port}"

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
        if self.sock is not None:
            self.sock.close()
