"""Stripe-shaped error responses, as the API reference documents them and as
stripe-python maps them to exceptions (by HTTP status, then ``error.type``)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

RATE_LIMIT_REASONS = (
    "global-concurrency",
    "global-rate",
    "endpoint-concurrency",
    "endpoint-rate",
    "resource-specific",
)


class StripeError(Exception):
    """An error answer: HTTP status, the ``error`` object and extra headers."""

    def __init__(
        self,
        status: int,
        error: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error.get("message", ""))
        self.status = status
        self.error = error
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body Stripe sends: ``{"error": {...}}``."""
        return {"error": self.error}

    def to_response(self, request_id: str | None = None) -> Response:
        """The error as an HTTP response."""
        headers = dict(self.headers)
        if request_id is not None:
            headers["Request-Id"] = request_id
        return Response(
            json.dumps(self.body()),
            status_code=self.status,
            media_type="application/json",
            headers=headers,
        )


def invalid_request(
    message: str,
    param: str | None = None,
    code: str | None = None,
    status: int = 400,
) -> StripeError:
    """A 400 ``invalid_request_error`` (stripe-python: ``InvalidRequestError``)."""
    error: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if param is not None:
        error["param"] = param
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    return StripeError(status, error)


def parameter_missing(param: str) -> StripeError:
    """A required parameter was not sent."""
    return invalid_request(f"Missing required param: {param}.", param, "parameter_missing")


def invalid_integer(param: str, value: str) -> StripeError:
    """A parameter that must be an integer was not."""
    return invalid_request(f"Invalid integer: {value}", param, "parameter_invalid_integer")


def resource_missing(
    object_name: str, object_id: str, param: str = "id", status: int = 404
) -> StripeError:
    """An unknown object, e.g. ``No such checkout.session: 'cs_...'``: a 404 for the
    object of the URL, a 400 for one named by a parameter."""
    return invalid_request(
        f"No such {object_name}: '{object_id}'", param, "resource_missing", status=status
    )


def unrecognized_url(method: str, path: str) -> StripeError:
    """A 404 for a URL the API does not have."""
    return invalid_request(
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
        "or we can help at https://support.stripe.com/.",
        status=404,
    )


def authentication(api_key: str | None) -> StripeError:
    """A 401 for a missing or wrong secret key (stripe-python: ``AuthenticationError``)."""
    if not api_key:
        message = (
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth "
            "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
        )
    else:
        shown = api_key if len(api_key) <= 12 else f"{api_key[:8]}{'*' * 10}{api_key[-4:]}"
        message = (
            f"Invalid API Key provided: {shown}. You can find your API keys at "
            "https://dashboard.stripe.com/apikeys."
        )
    return StripeError(401, {"type": "invalid_request_error", "message": message})


def api_error(status: int = 500, should_retry: bool | None = None) -> StripeError:
    """A 5xx ``api_error`` (stripe-python: ``APIError``)."""
    message = (
        "The server is temporarily unavailable. Please try again later."
        if status == 503
        else "An unknown error occurred"
    )
    headers = {} if should_retry is None else {"Stripe-Should-Retry": str(should_retry).lower()}
    return StripeError(status, {"type": "api_error", "message": message}, headers)


def rate_limited(reason: str, should_retry: bool | None = None) -> StripeError:
    """A 429 with ``Stripe-Rate-Limited-Reason`` (stripe-python: ``RateLimitError``)."""
    if reason not in RATE_LIMIT_REASONS:
        raise ValueError(f"unknown rate limit reason {reason!r}")
    if reason == "resource-specific":
        code = "lock_timeout"
        message = (
            "This object cannot be accessed right now because another API request or "
            "Stripe process is currently accessing it. If you see this error "
            "intermittently, retry the request. If you see this error frequently and "
            "are making multiple concurrent requests to a single object, make your "
            "requests serially or at a lower rate."
        )
    else:
        code = "rate_limit"
        message = (
            "Request rate limit exceeded. You can learn more about rate limits here "
            "https://stripe.com/docs/rate-limits."
        )
    err = invalid_request(message, code=code, status=429)
    err.headers["Stripe-Rate-Limited-Reason"] = reason
    if should_retry is not None:
        err.headers["Stripe-Should-Retry"] = str(should_retry).lower()
    return err


def idempotency_mismatch(key: str) -> StripeError:
    """The same ``Idempotency-Key`` was reused with other parameters."""
    return StripeError(
        400,
        {
            "type": "idempotency_error",
            "message": (
                "Keys for idempotent requests can only be used with the same parameters "
                "they were first used with. Try using a key other than "
                f"'{key}' if you meant to execute a different request."
            ),
        },
    )
