"""Prefect settings the project relies on, applied before Prefect is imported.

Without `PREFECT_API_URL` Prefect runs flows against a temporary local server it starts itself
(ephemeral mode); a cold start of that server can take a minute on a small machine, hence the
longer startup timeout. With `PREFECT_API_URL` set (e.g. `http://127.0.0.1:4200/api` from
`prefect server start`) runs, logs, artifacts and events land in that server's UI.
"""

from __future__ import annotations

import logging
import os

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # Library loggers whose records go to the run logs in the UI (one line per PDF and step).
    "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline,data_manifests,curation",
    # The pipeline also logs outside flow runs (plain `run_build`, tests): no warning for that.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}

PIPELINE_LOGGERS = ("pipeline", "data_manifests", "curation")


def apply_defaults() -> None:
    """Set the project's Prefect defaults where the environment does not say otherwise."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


def api_url() -> str | None:
    """The Prefect server flows report to, or None for ephemeral mode."""
    return os.environ.get("PREFECT_API_URL") or None


def quiet_client_loggers() -> None:
    """Keep the console to run logs: the API client logs every HTTP request at INFO."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def attach_pipeline_loggers() -> None:
    """Send the pipeline's INFO records to the run logs of the current flow or task run.

    `PREFECT_LOGGING_EXTRA_LOGGERS` only takes effect when it is set before Prefect configures
    logging, so the API handler is attached here as well (idempotent).
    """
    from prefect.logging.handlers import APILogHandler

    for name in PIPELINE_LOGGERS:
        library_logger = logging.getLogger(name)
        if library_logger.level == logging.NOTSET or library_logger.level > logging.INFO:
            library_logger.setLevel(logging.INFO)
        if not any(isinstance(handler, APILogHandler) for handler in library_logger.handlers):
            library_logger.addHandler(APILogHandler())


class _WithoutTraceback(logging.Formatter):
    """Formats a record as the wrapped formatter would, minus its traceback."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text:
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return self.inner.format(record)


def console_without_tracebacks() -> None:
    """Failed runs are logged by Prefect with their traceback; on the console the one-line
    message is enough (the run logs in the UI keep the traceback; `--debug` keeps it here)."""
    from prefect.logging.handlers import APILogHandler

    loggers = [logging.getLogger(), logging.getLogger("prefect"), *(
        logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")
    )]
    for handler in {h for lg in loggers for h in lg.handlers}:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, APILogHandler):
            if not isinstance(handler.formatter, _WithoutTraceback):
                handler.setFormatter(_WithoutTraceback(handler.formatter))
