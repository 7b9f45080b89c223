"""Fault injection: make the next calls of a Bot API method fail with Telegram's errors."""

from __future__ import annotations

from .models import InjectedFault, JSONDict
from .state import TelegramState

_DEFAULT_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Bad Request: injected failure",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


class FaultsMixin(TelegramState):
    """``fail_next`` and the lookup the request handler uses."""

    def fail_next(
        self,
        method: str,
        error_code: int = 429,
        description: str | None = None,
        retry_after: int | None = None,
        *,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with Telegram's error envelope."""
        parameters: JSONDict | None = None
        if error_code == 429:
            retry_after = 1 if retry_after is None else retry_after
            description = description or f"Too Many Requests: retry after {retry_after}"
        else:
            description = description or _DEFAULT_ERROR_DESCRIPTIONS.get(
                error_code, f"Error {error_code}"
            )
        if retry_after is not None:
            parameters = {"retry_after": retry_after}
        self._faults.setdefault(method.lower(), []).append(
            InjectedFault(error_code, description, parameters, times)
        )

    def _take_fault(self, method: str) -> InjectedFault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault
