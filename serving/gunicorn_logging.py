"""gunicorn's logger with a JSON access log, one object per line.

Kept free of Flask and prometheus_client imports: gunicorn's master imports it while
reading its configuration, before ``PROMETHEUS_MULTIPROC_DIR`` is set.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

import orjson
from gunicorn import glogging


class JsonLogger(glogging.Logger):
    """Access log lines as JSON; the app's ``serving`` logger goes where gunicorn's errors go."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        app_logger = logging.getLogger("serving")
        app_logger.handlers = list(self.error_log.handlers)
        app_logger.propagate = False

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        status = str(resp.status).split(None, 1)[0]
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "pid": os.getpid(),
            "remote": environ.get("REMOTE_ADDR"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": int(status) if status.isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "user_agent": environ.get("HTTP_USER_AGENT"),
        }
        # orjson escapes whatever the client put in the path or user agent.
        self.access_log.info(orjson.dumps(record).decode())
