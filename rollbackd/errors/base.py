"""The root of the error tree: every error rollbackd raises on purpose has a code."""

from __future__ import annotations

from typing import Any, ClassVar


class RollbackdError(Exception):
    """Base of every error rollbackd raises on purpose."""

    code: ClassVar[str] = "ERR_INTERNAL"
    transient: ClassVar[bool] = False

    def __init_subclass__(cls, *, code: str, transient: bool | None = None, **kwargs: Any) -> None:
        """Each class names its code, and whether a retry may succeed (inherited if unsaid)."""
        super().__init_subclass__(**kwargs)
        cls.code = code
        if transient is not None:
            cls.transient = transient

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]"
