"""Prefect settings the project relies on, applied before Prefect is imported.

Without `PREFECT_API_URL` Prefect runs flows against a temporary local server it starts itself
(ephemeral mode); a cold start of that server can take a minute on a small machine, hence the
longer startup timeout. With `PREFECT_API_URL` set (e.g. `http://127.0.0.1:4200/api` from
`prefect server start`) runs, logs, artifacts and events land in that server's UI.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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


def _die_with_parent(parent: int) -> Callable[[], None]:
    """For a child process: SIGKILL it when its parent dies (Linux `PR_SET_PDEATHSIG`)."""

    def arm() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def server_for_this_process() -> Iterator[str | None]:
    """A temporary Prefect server that cannot outlive this process, unless `PREFECT_API_URL` (in the
    environment or the active Prefect profile) names one.

    Prefect's own temporary server is a child that survives a `kill -9` of the build (a port and
    a few hundred MB each time); this one is started with a parent-death signal, stopped when the
    block ends, and flows in the block report to it. Yields its API URL (None when a server was named).
    """
    import httpx
    import prefect
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if api_url() is not None or PREFECT_API_URL.value():  # a server named in the environment or a profile
        yield None
        return

    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
               "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
               "--lifespan", "on"]
    environment = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    server = subprocess.Popen(command, env=environment, preexec_fn=_die_with_parent(os.getpid()))  # noqa: PLW1509
    try:
        deadline = time.monotonic() + float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the temporary Prefect server exited with code {server.returncode} while starting")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the temporary Prefect server did not answer on {url} in time")
            time.sleep(0.2)
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url  # for processes this one starts (Dask workers)
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
    finally:
        stop_process(server, 10)


def stop_process(process: subprocess.Popen, grace_seconds: float) -> None:
    """Terminate a child process, and kill it if it has not ended after `grace_seconds`."""
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
