"""Domain errors carry their HTTP status; one handler turns them into JSON bodies.

Every error the API answers has the shape ``{"detail": str, "code": str}`` (``ErrorOut``),
including a database that cannot be reached (503 ``database``) and a bug (500
``internal``, logged with its traceback, never shown to the caller). Only request validation
keeps FastAPI's 422 shape, whose ``detail`` lists the fields at fault.
"""

from __future__ import annotations

import json
from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from basketball_api.stripe_gateway import StripeFailure

log = structlog.get_logger("basketball_api.errors")


class DomainError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class Unprocessable(DomainError):
    status_code = 422
    code = "unprocessable"


class Unauthorized(DomainError):
    status_code = 401
    code = "unauthorized"


def install_error_handlers(app: FastAPI) -> None:
    async def domain(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        headers = getattr(exc, "headers", None)
        return JSONResponse({"detail": exc.message, "code": exc.code}, exc.status_code, headers)

    async def stripe_failure(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StripeFailure)
        return JSONResponse(
            {
                "detail": f"Payment provider unavailable, nothing was changed: {exc}",
                "code": "stripe",
            },
            exc.status_code,
            headers={"Retry-After": "30"} if exc.status_code == 503 else None,
        )

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        # Each error names its field; the offending value is not echoed back (it may be an
        # email address, or a number such as 1e400 that JSON cannot even carry).
        assert isinstance(exc, RequestValidationError)
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, 422)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        try:
            code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            code = "error"
        return JSONResponse(
            {"detail": exc.detail, "code": code}, exc.status_code, headers=exc.headers
        )

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # A SQLite write lock held too long, a lost or refused PostgreSQL connection, an
        # exhausted pool: the request did nothing, and can be retried.
        if isinstance(exc, DBAPIError) and not _unavailable(exc):
            raise exc  # a bug (a constraint, a bad statement): the 500 below, logged
        log.warning("database_unavailable", path=request.url.path, error=type(exc).__name__)
        return JSONResponse(
            {
                "detail": "The database is busy or unreachable; nothing was changed, try again.",
                "code": "database",
            },
            503,
            headers={"Retry-After": "5"},
        )

    async def internal_error(_: Request, __: Exception) -> JSONResponse:
        # Starlette re-raises the exception after sending this, and uvicorn logs it with its
        # traceback ("Exception in ASGI application"); the caller learns nothing of it.
        return JSONResponse({"detail": "Internal server error", "code": "internal"}, 500)

    app.add_exception_handler(DomainError, domain)
    app.add_exception_handler(StripeFailure, stripe_failure)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(DBAPIError, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_unavailable)
    # Starlette runs the handler of ``Exception`` in its outermost middleware, then re-raises
    # for the server; the caller gets the JSON body either way.
    app.add_exception_handler(Exception, internal_error)


def _unavailable(exc: DBAPIError) -> bool:
    """The database could not do the work (down, unreachable, locked, out of connections), as
    opposed to refusing it (a constraint, a bad statement), which is a bug and a 500."""
    return isinstance(exc, OperationalError) or exc.connection_invalidated


class JsonBodyLimit:
    """Starlette's body limit answers a body it refuses by its declared length with a plain-text
    413 of its own, past every exception handler; this puts that answer in the error shape, as
    the limit already answers a body it refuses while it streams in."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: Message | None = None

        async def send_json(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and _plain_413(message):
                held = message
                return
            if held is not None and message["type"] == "http.response.body":
                body = json.dumps(
                    {"detail": "Content Too Large", "code": "request_entity_too_large"}
                ).encode()
                headers = [(b"content-type", b"application/json")]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**held, "headers": headers})
                held = None
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, send_json)


def _plain_413(message: Message) -> bool:
    headers: dict[bytes, bytes] = dict(message.get("headers", ()))
    status: int = message["status"]
    return status == 413 and headers.get(b"content-type", b"").startswith(b"text/plain")


class Api(FastAPI):
    """FastAPI with :class:`JsonBodyLimit` outside Starlette's body limit."""

    def build_middleware_stack(self) -> ASGIApp:
        return JsonBodyLimit(super().build_middleware_stack())
