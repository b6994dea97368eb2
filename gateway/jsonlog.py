"""`--log-format json`: one JSON object per log line, for log shippers.

Each object has the fields of the text line it replaces: `time`, `level` and
`message` for the gateway's own events and uvicorn's; for an access line
`client_addr`, `request_line` and `status_code` instead of `message`. `logger` names
the source, and a logged exception comes as one `exception` string, never as
extra lines.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname,
            "logger": record.name,
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            # uvicorn's own access call: client, method, path with query, version, status
            client_addr, method, path, version, status = args
            entry["client_addr"] = client_addr
            entry["request_line"] = f"{method} {path} HTTP/{version}"
            entry["status_code"] = status
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

    @staticmethod
    def _time(record: logging.LogRecord) -> str:
        # The text lines' timestamp (local time, milliseconds), as ISO 8601 with its offset.
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        offset = time.strftime("%z", time.localtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}{offset[:3]}:{offset[3:]}"
