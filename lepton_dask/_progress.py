"""Progress bars for long work: tqdm over futures or local tasks."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def want_progress(progress: bool | None) -> bool:
    """Resolve a ``progress=`` argument: None means "when stderr is a terminal".

    >>> want_progress(True), want_progress(False)
    (True, False)
    """
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


def bar(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    **kwargs: Any,
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr when ``enabled``.

    >>> list(bar([1, 2], enabled=False))
    [1, 2]
    """
    if not enabled:
        yield from iterable
        return
    from tqdm.auto import tqdm

    with tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, leave=True, **kwargs
    ) as t:
        for item in iterable:
            yield item
            t.update(1)
