"""Operators: named credentials, a signed expiring browser session, CSRF on every form, and
throttled failed logins.

- Credentials: ``OPERATOR_TOKENS`` maps names to tokens (``{"ann": "…", "ben": "sha256:<hex>"}``:
  a token, or the SHA-256 of one so the configuration holds no usable secret). ``ADMIN_TOKEN``
  still works, as the operator named ``admin``. A presented token is hashed and compared with
  every credential in constant time.
- The JSON API takes ``Authorization: Bearer <token>`` (FastAPI's ``HTTPBearer``, so ``/docs``
  has an Authorize button); :func:`operator` yields the operator's name for the audit log.
- The page logs in once through a form; the cookie then holds a session signed and dated by
  ``itsdangerous`` (the operator's name, a fingerprint of the credential, a CSRF token), never
  the token. It expires after ``OPERATOR_SESSION_SECONDS``, stops working when the credential
  is removed or changed, and is ``HttpOnly``, ``SameSite=Strict``, and ``Secure`` when the page
  is served over HTTPS (``PUBLIC_BASE_URL`` is https, or the proxy named by
  ``FORWARDED_ALLOW_IPS`` says so in ``X-Forwarded-Proto``).
- Every form posts :func:`csrf_field`'s token, and :func:`operator_form` checks it and the
  ``Origin`` (or ``Referer``) before anything changes: a cross-site post changes nothing.
- Failed logins (form or bearer) are counted per client address in ``limits``' moving windows
  (``OPERATOR_LOGIN_FAILURE_LIMIT``, in the storage of the other rate limits: per replica in
  memory, or shared through Redis). Past them a wrong (or missing) token from that address gets
  429 with ``Retry-After`` instead of 401, so guessing gets slower; a right token is still let
  in, so a guesser behind a shared address cannot lock the real operators out. The token is
  compared first, in the same constant time either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from itsdangerous import BadSignature, URLSafeTimedSerializer
from markupsafe import Markup

from basketball_api import access
from basketball_api.errors import DomainError, Unauthorized
from basketball_api.ratelimit import RateLimits, TooManyRequests
from basketball_api.schemas import ErrorOut
from basketball_api.settings import Settings

FAILED_LOGINS = "operator_login_failures"  # the limit's name in ``RateLimits``
COOKIE = "basketball_admin"
COOKIE_PATH = "/admin"
CSRF_FIELD = "csrf_token"
LEGACY_OPERATOR = "admin"  # the name ADMIN_TOKEN signs in as


_ERROR_TEXT = {
    401: "No valid operator token (or operator endpoints disabled)",
    403: "Refused: the form came from another site or lacks its CSRF token",
    404: "No such order or item",
    409: "The order or item is not in a state that allows this",
    422: "Invalid parameters",
    429: "Too many failed logins from this address (see Retry-After)",
    502: "Stripe refused the request",
    503: "Stripe unavailable; nothing was changed",
}


def operator_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of an operator route: 401, 422 and 429 always, plus ``codes``."""
    return {
        code: {"model": ErrorOut, "description": _ERROR_TEXT[code]}
        for code in sorted({401, 422, 429, *codes})
    }


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Credential:
    name: str
    digest: bytes  # SHA-256 of the token

    @property
    def fingerprint(self) -> str:
        """Binds a session to this credential: a changed or removed token ends its sessions."""
        return hashlib.sha256(b"session:" + self.digest).hexdigest()[:16]


def credentials_of(settings: Settings) -> list[Credential]:
    out = []
    for name, secret in sorted(settings.operator_tokens.items()):
        value = secret.get_secret_value()
        if value.startswith("sha256:"):
            out.append(Credential(name, bytes.fromhex(value.removeprefix("sha256:"))))
        else:
            out.append(Credential(name, _digest(value)))
    if settings.admin_token is not None and LEGACY_OPERATOR not in settings.operator_tokens:
        out.append(Credential(LEGACY_OPERATOR, _digest(settings.admin_token.get_secret_value())))
    return out


class Operators:
    """The operator credentials and the session signer, built once per app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.credentials = credentials_of(settings)
        self.session_seconds = settings.operator_session_seconds
        key = (
            settings.operator_session_secret.get_secret_value()
            if settings.operator_session_secret is not None
            else _derived_key(self.credentials)
        )
        self._signer = URLSafeTimedSerializer(key, salt="basketball-api operator session")

    @property
    def enabled(self) -> bool:
        return bool(self.credentials)

    def identify(self, token: str | None) -> Credential | None:
        if not token:
            return None
        presented = _digest(token)
        found = None
        for credential in self.credentials:  # no early exit: same time whoever matches
            if hmac.compare_digest(presented, credential.digest):
                found = credential
        return found

    def new_session(self, credential: Credential) -> str:
        return self._signer.dumps(
            {"op": credential.name, "fp": credential.fingerprint, "csrf": secrets.token_urlsafe(32)}
        )

    def read_session(self, cookie: str | None) -> dict[str, str] | None:
        if not cookie:
            return None
        try:
            data = self._signer.loads(cookie, max_age=self.session_seconds)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        current = {c.name: c.fingerprint for c in self.credentials}
        if current.get(data.get("op", "")) != data.get("fp"):
            return None
        return {k: str(v) for k, v in data.items()}


def _derived_key(credentials: list[Credential]) -> str:
    """Without ``OPERATOR_SESSION_SECRET``, a key derived from the credentials: the same on
    every replica, and rotating any token logs everyone out."""
    material = b"".join(c.name.encode() + b"\0" + c.digest for c in credentials)
    return hashlib.sha256(b"basketball-api session key\0" + material).hexdigest()


async def check_failed_logins(request: Request, client: str) -> None:
    """429 (``Retry-After``) while ``client`` is past the failed-login limit. Called only once
    a presented token turned out wrong: the throttle never refuses a right one."""
    limits: RateLimits = request.app.state.rate_limits
    await limits.check(FAILED_LOGINS, client)


async def count_failed_login(request: Request, client: str) -> None:
    limits: RateLimits = request.app.state.rate_limits
    with contextlib.suppress(TooManyRequests):  # this attempt is answered as failed anyway
        await limits.hit(FAILED_LOGINS, client)


def get_operators(request: Request) -> Operators:
    operators: Operators = request.app.state.operators
    return operators


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="operator token",
    description="An operator's token from OPERATOR_TOKENS (or ADMIN_TOKEN, operator 'admin').",
)


async def operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The operator calling the JSON API (bearer token); their name, for the audit log."""
    operators = get_operators(request)
    if not operators.enabled:
        raise Unauthorized("operator endpoints are disabled: set OPERATOR_TOKENS or ADMIN_TOKEN")
    client = client_of(request)
    presented = credentials.credentials if credentials else None
    found = operators.identify(presented)
    if found is None:
        await check_failed_logins(request, client)
        if presented:  # a guess; a request with no token at all is not one
            await count_failed_login(request, client)
        raise Unauthorized("a valid 'Authorization: Bearer <operator token>' header is required")
    request.state.operator = found.name
    return found.name


#: The operator calling a JSON route (the route's access rule is then ``operator``).
OperatorName = Annotated[str, access.operator(operator)]


# -- the browser session ------------------------------------------------------------------


def is_https(request: Request, settings: Settings) -> bool:
    """Served over HTTPS: the request's scheme (rewritten from ``X-Forwarded-Proto`` when the
    proxy is trusted) or a public address that is https."""
    return request.url.scheme == "https" or settings.public_base_url.startswith("https://")


def page_session(request: Request) -> dict[str, str] | None:
    """The signed session of the page's cookie, or None (then the page shows the login)."""
    session = get_operators(request).read_session(request.cookies.get(COOKIE))
    if session is not None:
        request.state.operator_session = session
        request.state.operator = session["op"]
    return session


def csrf_field(request: Request) -> Markup:
    """The hidden input every operator form carries; a Jinja global in the operator templates:
    ``{{ csrf_field(request) }}`` inside each ``<form method="post">``."""
    session = getattr(request.state, "operator_session", None) or {}
    return Markup('<input type="hidden" name="{}" value="{}">').format(
        CSRF_FIELD, session.get("csrf", "")
    )


def same_origin(request: Request, settings: Settings) -> bool:
    """The form was posted from this site: ``Origin`` (or, without one, ``Referer``) names this
    host, or the configured public address."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    origin = f"{parts.scheme}://{parts.netloc}"
    own = f"{request.url.scheme}://{request.url.netloc}"
    public = urlsplit(settings.public_base_url)
    return origin in (own, f"{public.scheme}://{public.netloc}")


class LoginRequired(DomainError):
    status_code = 303
    code = "login_required"
    headers = {"Location": COOKIE_PATH}


async def operator_form(request: Request) -> str:
    """The operator on a page route: a valid session, and for a form's POST also a same-site
    ``Origin`` and the session's CSRF token, or nothing happens (back to the login page without
    a session, 403 otherwise). Yields the operator's name for the audit log."""
    operators = get_operators(request)
    session = page_session(request)
    if session is None:
        raise LoginRequired("log in on the operator page first")
    if request.method in ("GET", "HEAD"):
        return session["op"]
    if not same_origin(request, operators.settings):
        raise Forbidden("cross-site form post refused (Origin does not match this site)")
    form = await request.form()
    presented = form.get(CSRF_FIELD)
    if not isinstance(presented, str) or not hmac.compare_digest(
        presented.encode(), session["csrf"].encode()
    ):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")
    return session["op"]


#: The operator posting a page's form (the route's access rule is then ``operator``).
FormOperator = Annotated[str, access.operator(operator_form)]


def set_session_cookie(response: Any, request: Request, value: str) -> None:
    operators = get_operators(request)
    response.set_cookie(
        COOKIE,
        value,
        max_age=operators.session_seconds,
        httponly=True,
        samesite="strict",
        secure=is_https(request, operators.settings),
        path=COOKIE_PATH,
    )
