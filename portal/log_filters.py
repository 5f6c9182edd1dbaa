"""Logging filters (LOGGING in portal/settings.py)."""

from __future__ import annotations

import logging

from redis.exceptions import ConnectionError as RedisConnectionError


class RedisReconnects(logging.Filter):
    """channels_redis's pub/sub layer logs a lost Redis connection (a Redis restart) as an
    unexpected error with its traceback, then reconnects by itself: that is a warning, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.levelno >= logging.ERROR and isinstance(error, RedisConnectionError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = f"{record.getMessage()} (Redis connection lost: {error}; reconnecting)"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True
