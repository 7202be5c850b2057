"""Logging set-up shared by the CLIs, and the relay of records from the processes they spawn."""

import logging
from logging.handlers import QueueHandler
from multiprocessing.queues import Queue

from coinflow.redact import RedactingFormatter

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    _quiet_libraries()


def _quiet_libraries() -> None:
    for noisy in ("feast", "httpx", "websockets"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def log_to_queue(queue: Queue, level: int) -> None:
    """In a child process: send every record at ``level`` and above to the parent through ``queue``.

    Records leave with their message formatted (arguments merged, traceback appended) and nothing else, so
    that the parent's handlers format, redact and print them as their own (see `ToLogger`).
    """
    logging.basicConfig(level=level, handlers=[QueueHandler(queue)], format="%(message)s", force=True)
    _quiet_libraries()


class ToLogger(logging.Handler):
    """Hands a record made in another process to this process's logger of the same name, and so its handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)
