"""Optional tqdm progress bars for the long-running analysis tools."""

from __future__ import annotations

from typing import Any, Protocol


class Bar(Protocol):
    """The part of tqdm's interface the tools use."""

    def update(self, n: int = 1) -> Any: ...

    def close(self) -> None: ...


class _Silent:
    """Stands in for a bar that is not shown."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(*, total: int | None, desc: str, enabled: bool) -> Bar:
    """A tqdm bar when ``enabled``, tqdm is installed and stderr is a terminal; else a silent one.

    A bar is a convenience, so a missing tqdm means no bar rather than an error.
    """
    if not enabled:
        return _Silent()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Silent()
    # disable=None: tqdm stays quiet when stderr is not a TTY (pipes, CI logs).
    return tqdm(total=total, desc=desc, disable=None, leave=False)
