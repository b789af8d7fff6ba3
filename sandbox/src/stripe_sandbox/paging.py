"""Stripe's cursor paging over a sorted index, newest first.

Indexes are ``SortedList``s of ``(created, seq, id)`` keys in ascending order.
Every bound (``created[...]``, ``starting_after``, ``ending_before``) is found by
bisection, so a page costs O(log n + limit) however deep the cursor is; only
filters that have no index of their own (``predicate``) scan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sortedcontainers import SortedList

from .errors import invalid_request
from .forms import CreatedRange

Key = tuple[int, int, str]


def _take(
    keys: Iterable[Key], limit: int, predicate: Callable[[str], bool] | None
) -> tuple[list[str], bool]:
    ids: list[str] = []
    for key in keys:
        if predicate is not None and not predicate(key[2]):
            continue
        if len(ids) == limit:
            return ids, True
        ids.append(key[2])
    return ids, False


def check_cursors(starting_after: str | None, ending_before: str | None) -> None:
    """Stripe refuses both cursors at once."""
    if starting_after and ending_before:
        raise invalid_request(
            "You may only specify one of these parameters: ending_before, starting_after.",
            "ending_before",
        )


def page(
    index: SortedList[Key],
    created: CreatedRange,
    limit: int,
    starting_after: Key | None = None,
    ending_before: Key | None = None,
    predicate: Callable[[str], bool] | None = None,
) -> tuple[list[str], bool]:
    """Ids of one page, newest first, and ``has_more``.

    - no cursor: the ``limit`` newest items;
    - ``starting_after``: the ``limit`` items just older than it; ``has_more``
      says whether still older ones exist;
    - ``ending_before``: the ``limit`` items just newer than it (still newest
      first); ``has_more`` says whether still newer ones exist.
    """
    lower = created.lower()
    upper = created.upper()
    lo = 0 if lower is None else index.bisect_left((lower, -1, ""))
    hi = len(index) if upper is None else index.bisect_left((upper + 1, -1, ""))
    if ending_before is not None:
        lo = max(lo, index.bisect_right(ending_before))
        if lo >= hi:
            return [], False
        stop = hi if predicate is not None else min(hi, lo + limit + 1)
        ids, has_more = _take(index.islice(lo, stop), limit, predicate)
        ids.reverse()
        return ids, has_more
    if starting_after is not None:
        hi = min(hi, index.bisect_left(starting_after))
    if lo >= hi:
        return [], False
    start = lo if predicate is not None else max(lo, hi - limit - 1)
    return _take(index.islice(start, hi, reverse=True), limit, predicate)
