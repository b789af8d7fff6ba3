"""Domain errors carry their HTTP status; one handler turns them into JSON bodies."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from basketball_api.stripe_gateway import StripeFailure


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

    async def database_busy(_: Request, exc: Exception) -> JSONResponse:
        # A SQLite write lock held too long, a lost PostgreSQL connection, an exhausted pool:
        # the request did nothing, and can be retried.
        return JSONResponse(
            {
                "detail": "The database is busy or unreachable; try again shortly.",
                "code": "database",
            },
            503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(OperationalError, database_busy)
    app.add_exception_handler(PoolTimeout, database_busy)
    app.add_exception_handler(DomainError, domain)
    app.add_exception_handler(StripeFailure, stripe_failure)
