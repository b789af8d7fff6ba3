"""Domain errors carry their HTTP status; one handler turns them into JSON bodies."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
        return JSONResponse({"detail": exc.message, "code": exc.code}, exc.status_code)

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

    app.add_exception_handler(DomainError, domain)
    app.add_exception_handler(StripeFailure, stripe_failure)
