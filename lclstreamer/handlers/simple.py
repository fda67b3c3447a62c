"""The `file` and `null` data handlers."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import HandlerError
from ..models import FileHandler as FileConfig
from ..models import NullHandler as NullConfig
from ..protocols import StreamContext


class NullHandler:
    """Counts messages and bytes, keeps nothing."""

    def __init__(self, cfg: NullConfig, ctx: StreamContext, suffix: str) -> None:
        self.messages = 0
        self.bytes = 0

    def __enter__(self) -> NullHandler:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def handle(self, message: memoryview | bytes) -> None:
        self.messages += 1
        self.bytes += len(message)


class FileHandler:
    """One file per message, `<prefix>-r<rank>-<counter><suffix>`, renamed into place when
    complete so a reader never sees a partial file."""

    def __init__(self, cfg: FileConfig, ctx: StreamContext, suffix: str) -> None:
        self.directory = Path(cfg.directory)
        self.prefix = f"{cfg.prefix}-r{ctx.rank:04d}-"
        self.suffix = suffix
        self.count = 0

    def __enter__(self) -> FileHandler:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HandlerError(f"file handler: cannot create {self.directory}: {exc}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def path(self, counter: int) -> Path:
        """Where message number `counter` of this rank is written."""
        return self.directory / f"{self.prefix}{counter:06d}{self.suffix}"

    def handle(self, message: memoryview | bytes) -> None:
        final = self.path(self.count)
        partial = final.with_name(f".{final.name}.part")
        try:
            with open(partial, "wb") as f:
                f.write(message)
            os.replace(partial, final)
        except OSError as exc:
            raise HandlerError(f"file handler: cannot write {final}: {exc}") from None
        self.count += 1
