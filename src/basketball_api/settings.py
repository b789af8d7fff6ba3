"""Every knob of the service, read from the environment (pydantic-settings).

Defaults are safe for a laptop: a SQLite file and the local Stripe sandbox, no keys needed.
Outside ``ENVIRONMENT=local`` placeholder secrets are refused at start-up.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from basketball_api.models import Category

SANDBOX_API_KEY = "sk_test_sandbox"
SANDBOX_API_BASE = "http://127.0.0.1:12111"


class Settings(BaseSettings):
    """Configuration; each field maps to the upper-case environment variable of its name."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    environment: Literal["local", "production"] = "local"
    database_url: str = "sqlite:///var/basketball.db"

    stripe_api_key: SecretStr = SecretStr(SANDBOX_API_KEY)
    stripe_api_base: str = SANDBOX_API_BASE
    stripe_webhook_secret: SecretStr | None = None
    stripe_max_network_retries: int = Field(default=2, ge=0, le=10)
    stripe_timeout_seconds: float = Field(default=10.0, gt=0)
    stripe_rate_limit_per_second: float = Field(default=20.0, gt=0, le=100)
    stripe_max_concurrency: int = Field(default=8, ge=1, le=64)
    stripe_rate_limit_retries: int = Field(default=4, ge=0, le=20)

    public_base_url: str = "http://127.0.0.1:8000"
    checkout_expires_after_seconds: int = Field(default=24 * 3600, ge=30 * 60, le=24 * 3600)

    refresh_interval_seconds: float = Field(default=300.0, gt=0, le=300)
    refresh_deadline_seconds: float = Field(default=120.0, gt=0)
    expiry_grace_seconds: float = Field(default=60.0, ge=0)

    webhook_max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    request_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Per client address (``limits`` notation; ";" joins several windows). Each of these
    # endpoints can cost a Stripe call.
    order_rate_limit: str = "10/minute;60/hour"
    pay_link_rate_limit: str = "20/minute;200/hour"
    rate_limit_storage_uri: str = "async+memory://"  # one replica; async+redis://… for several
    order_wait_seconds: float = Field(default=10.0, gt=0, le=60)
    # Operators: name -> token (or "sha256:<hex>" of one), as JSON in OPERATOR_TOKENS.
    # ADMIN_TOKEN is still accepted, as the operator named "admin".
    operator_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    admin_token: SecretStr | None = None
    # Signs the page's session cookie; unset: a key derived from the operator credentials.
    operator_session_secret: SecretStr | None = None
    operator_session_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)
    # Failed operator logins per client address (``limits`` notation, like the limits above)
    # past which a wrong token from it gets 429 instead of 401 (a right one is still let in).
    operator_login_failure_limit: str = "10/15minutes;50/day"
    # The TLS proxy whose X-Forwarded-Proto/-For are believed (comma-separated addresses or
    # "*"); the same variable uvicorn reads. Unset: only the connection itself counts.
    forwarded_allow_ips: str | None = None
    heal_paid_orders: bool = False

    smtp_host: str | None = None  # unset: no email is sent
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_sender: str = "payments@basketball-club.example"

    # A stranded order (its link dead) is cancelled after this many days; 0 = never.
    stranded_cancel_after_days: float = Field(default=7.0, ge=0)
    # A category with a product whose event is at most this many days ahead is urgent too
    # (its stranded orders page at any hour); 0 = only URGENT_CATEGORIES.
    urgent_days_before_event: int = Field(default=7, ge=0, le=365)
    # Categories whose stranded orders page at any hour (comma-separated, e.g. "tournament"
    # in the days before an event); exported as basketball_api_category_urgent.
    urgent_categories: Annotated[frozenset[Category], NoDecode] = frozenset()

    # Readiness (/health/ready) fails when the database has not answered within this time.
    health_db_timeout_seconds: float = Field(default=2.0, gt=0, le=30)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    @field_validator("urgent_categories", mode="before")
    @classmethod
    def _split_categories(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _refuse_placeholders_outside_local(self) -> Settings:
        if self.environment == "local":
            return self
        problems = []
        if self.stripe_api_key.get_secret_value() in ("", SANDBOX_API_KEY):
            problems.append("STRIPE_API_KEY is the sandbox placeholder")
        if self.stripe_webhook_secret is None:
            problems.append("STRIPE_WEBHOOK_SECRET is not set")
        tokens = dict(self.operator_tokens)
        if self.admin_token is not None:
            tokens.setdefault("admin", self.admin_token)
        if not tokens:
            problems.append("no operator credential: set OPERATOR_TOKENS (or ADMIN_TOKEN)")
        short = sorted(
            name
            for name, token in tokens.items()
            if not token.get_secret_value().startswith("sha256:")
            and len(token.get_secret_value()) < 16
        )
        if short:
            problems.append(f"operator tokens shorter than 16 characters: {', '.join(short)}")
        if self.database_url.startswith("sqlite"):
            problems.append("DATABASE_URL points at SQLite; production runs on PostgreSQL")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self
