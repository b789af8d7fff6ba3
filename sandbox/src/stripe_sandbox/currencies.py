"""Currencies as Stripe's "Supported currencies" page lists them: the presentment
currencies (lowercase ISO codes), the zero-decimal ones, and the minimum amount a
payment must reach, in the currency's smallest unit.

Stripe checks the minimum against the account's settlement currency (after
conversion); the sandbox behaves as an account that settles in the session's own
currency, and checks only the currencies Stripe's table lists.
"""

from __future__ import annotations

from .errors import invalid_request

SUPPORTED = frozenset(
    """
    usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl
    bsd bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd
    fkp gbp gel gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs
    khr kmf krw kwd kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk
    mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub
    rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs tnd top try ttd twd tzs uah
    ugx uyu uzs vnd vuv wst xaf xcd xcg xof xpf yer zar zmw
    """.split()  # noqa: SIM905
)
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()  # noqa: SIM905
)
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

#: Minimum charge amounts, in the smallest unit.
MINIMUM = {
    "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50,
    "czk": 1500, "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50,
    "jpy": 50, "mxn": 1000, "myr": 200, "nok": 300, "nzd": 50, "pln": 200, "ron": 200,
    "sek": 300, "sgd": 50, "thb": 1000,
}  # fmt: skip

#: The largest amount Stripe accepts (eight digits).
MAXIMUM_AMOUNT = 99_999_999


def check_currency(currency: str, param: str) -> str:
    """The lowercase code, or Stripe's error for a currency it does not support."""
    code = currency.lower()
    if code not in SUPPORTED:
        raise invalid_request(
            f"Invalid currency: {currency}. Stripe currently supports these currencies: "
            + ", ".join(sorted(SUPPORTED)),
            param,
        )
    return code


def shown(amount: int, currency: str) -> str:
    """``0.50 eur``, ``50 jpy``."""
    if currency in ZERO_DECIMAL:
        return f"{amount} {currency}"
    return f"{amount / 100:.2f} {currency}"


def check_minimum(total: int, currency: str) -> None:
    """Stripe's error when a session's total is below the currency's minimum."""
    minimum = MINIMUM.get(currency, 1)
    if total < minimum:
        raise invalid_request(
            "The Checkout Session's total amount due must add up to at least "
            f"{shown(minimum, currency)}.",
            "line_items",
            "amount_too_small",
        )
    if total > MAXIMUM_AMOUNT:
        raise invalid_request(
            f"The Checkout Session's total amount due must be no more than "
            f"{shown(MAXIMUM_AMOUNT, currency)}.",
            "line_items",
            "amount_too_large",
        )
