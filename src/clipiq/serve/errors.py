"""The service's errors: one JSON shape, a stable snake_case code and an HTTP status for each."""

from __future__ import annotations

#: code -> HTTP status. Codes are part of the API: never renamed, only added.
ERROR_STATUS: dict[str, int] = {
    "bad_request": 400,
    "unknown_restorer": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "upload_too_large": 413,
    "image_too_large": 413,
    "bad_image": 422,
    "bad_aspect_ratio": 422,
    "no_files": 422,
    "too_many_files": 422,
    "bad_option": 422,
    "restore_failed": 422,
    "internal_error": 500,
    "not_ready": 503,
    "queue_full": 503,
    "timeout": 504,
}


class ServeError(Exception):
    """An error answered as ``{"error": {"code", "message", "input"}}`` with the code's status."""

    def __init__(self, code: str, message: str, input: str | None = None, headers: dict[str, str] | None = None):
        if code not in ERROR_STATUS:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.input = input
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.code]

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "input": self.input}}
