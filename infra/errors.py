"""Errors of the adapters and the local services: each carries what a caller (or an operator
reading the one-line message) needs to act."""

from __future__ import annotations

from recstream.core.errors import RecstreamError


class ToolMissingError(RecstreamError):
    """An executable the local infrastructure needs is not installed."""

    def __init__(self, tool: str, hint: str) -> None:
        self.tool = tool
        super().__init__(f"{tool} not found on PATH: {hint}")


class PortInUseError(RecstreamError):
    """A port we were asked to listen on is taken by a process we did not start."""

    def __init__(self, service: str, port: int, setting: str) -> None:
        self.service = service
        self.port = port
        super().__init__(
            f"{service} cannot start: port {port} is already in use by another process; stop "
            f"it or choose another port with {setting}"
        )


class ServiceStartError(RecstreamError):
    """A local service process exited or failed while starting."""

    def __init__(self, service: str, detail: str, log_path: str) -> None:
        self.service = service
        self.log_path = log_path
        super().__init__(f"{service} failed to start: {detail} (log: {log_path})")


class ServiceUnreachableError(RecstreamError):
    """A service did not answer within the allowed time."""

    def __init__(self, service: str, address: str, timeout_s: float, detail: str = "") -> None:
        self.service = service
        self.address = address
        self.timeout_s = timeout_s
        suffix = f": {detail}" if detail else ""
        super().__init__(f"{service} at {address} not reachable within {timeout_s:g}s{suffix}")


class ServiceAuthError(RecstreamError):
    """A service refused our credentials or our TLS handshake: `settings` names what to fix."""

    def __init__(self, service: str, address: str, detail: str, settings: str) -> None:
        self.service = service
        self.address = address
        super().__init__(f"{service} at {address}: {detail}; check {settings}")


class TopicMismatchError(RecstreamError):
    """Existing topics disagree with the settings (for example their partition count)."""

    def __init__(self, mismatches: list[str]) -> None:
        self.mismatches = mismatches
        super().__init__("existing topics differ from the settings:\n  " + "\n  ".join(mismatches))


class DeadLetterError(RecstreamError):
    """Dead letters were not acknowledged: their source records must not be committed."""


class CollabRejectedError(RecstreamError):
    """A staged version that can never be installed (e.g. its dimension does not fit the index)."""
