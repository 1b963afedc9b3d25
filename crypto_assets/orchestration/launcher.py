"""Launch runs on an experiment's instance against the code location, the way the UI does.

`execute_in_process` runs carry no repository origin, so the UI's Jobs page and Overview timeline never
list them. Runs created here carry the remote job origin of the code location `workspace.yaml` names
(`crypto_assets`, module `crypto_assets.definitions`) and start through `instance.launch_run`, i.e. the
instance's run launcher: the default launcher runs them in the code server, a distributed launcher
(Docker, Kubernetes) would start them from the same origin. `launch_run` bypasses the run coordinator on
purpose: the instance's queued coordinator needs a daemon to dequeue, and `crypto-lab` runs without one.

The code server is a `dagster api grpc` process of our own, started in its own session: a Ctrl-C in the
terminal then reaches only `crypto-lab`, which cancels its run through the launcher (the run ends
CANCELED), instead of also hitting the run worker mid-step (which ends it FAILURE, "interrupted
unexpectedly") and the code server (which would then be gone when the cancel request is sent).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from dagster._core.remote_representation.code_location import CodeLocation
    from dagster._core.remote_representation.external import RemoteRepository
    from dagster._core.workspace.context import WorkspaceProcessContext, WorkspaceRequestContext

# Must equal workspace.yaml's entry (a test checks): runs are matched to the UI's code location by name.
CODE_LOCATION = "crypto_assets"
CODE_MODULE = "crypto_assets.definitions"
# A code server whose `crypto-lab` died (kill -9) finishes its current run, then exits after this long
# without a heartbeat instead of living on.
HEARTBEAT_TIMEOUT_S = 60
SERVER_START_TIMEOUT_S = 180.0  # importing the code location takes ~2 s here; generous for cold caches
POLL_S = 0.25

# The events `watch` reports: step progress, and the run's own end (its failure carries a launch or worker error).
PROGRESS_EVENTS = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_SKIPPED,
    dg.DagsterEventType.STEP_UP_FOR_RETRY,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
}


class CodeServerError(RuntimeError):
    """The code location did not load (its error is in the code server's output above)."""


@dataclass(frozen=True)
class RunRequest:
    """One run to launch: a job, its tags (partition or partition range) and an optional asset subset."""

    job: str
    label: str
    tags: Mapping[str, str] = field(default_factory=dict)
    asset_selection: frozenset[dg.AssetKey] | None = None


@contextmanager
def code_server(instance: dg.DagsterInstance, log_level: str = "WARNING") -> Iterator[WorkspaceProcessContext]:
    """Start the code location in a `dagster api grpc` process of its own session and yield a workspace
    on it; shut the server down on exit. The server inherits the environment: DAGSTER_HOME and
    CRYPTO_ASSETS_CONFIG must already point at the experiment."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import GrpcServerTarget
    from dagster._grpc.client import DagsterGrpcClient

    folder = tempfile.mkdtemp(prefix="crypto-lab-")  # a short path: unix socket paths are limited to ~100 bytes
    socket = str(Path(folder) / "grpc.sock")
    command = [
        sys.executable, "-m", "dagster", "api", "grpc",
        "--module-name", CODE_MODULE, "--location-name", CODE_LOCATION, "--socket", socket,
        "--heartbeat", "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT_S), "--log-level", log_level.lower(),
        # Processes started from the runs' origin (a step on Ray, orchestration.executors) run `<this python> -m
        # dagster`, not a `dagster` that the node's PATH may not have.
        "--use-python-environment-entry-point",
    ]  # fmt: skip
    server = subprocess.Popen(command, start_new_session=True)
    client = DagsterGrpcClient(socket=socket)
    stop_beating = threading.Event()
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                raise CodeServerError(f"the code server for {CODE_MODULE} exited with code {server.returncode}")
            try:
                client.ping("")
                break
            except Exception:  # noqa: BLE001 (not listening yet: any connection error means "retry")
                if time.monotonic() > deadline:
                    raise CodeServerError(f"the code server for {CODE_MODULE} did not start in time") from None
                time.sleep(POLL_S)
        threading.Thread(target=_beat, args=(client, stop_beating), name="code-server-heartbeat", daemon=True).start()
        with WorkspaceProcessContext(
            instance,
            GrpcServerTarget(host="localhost", port=None, socket=socket, location_name=CODE_LOCATION),
        ) as workspace:
            error = workspace.create_request_context().get_code_location_error(CODE_LOCATION)
            if error is not None:
                raise CodeServerError(f"code location {CODE_LOCATION} failed to load:\n{error.to_string()}")
            yield workspace
    finally:
        stop_beating.set()
        _stop(server, client)
        shutil.rmtree(folder, ignore_errors=True)


def _beat(client: object, stop: threading.Event) -> None:
    # A missed beat is harmless (the next one comes well within the timeout), so errors are not raised.
    while not stop.wait(HEARTBEAT_TIMEOUT_S / 4):
        with contextlib.suppress(Exception):
            client.heartbeat("crypto-lab")  # type: ignore[attr-defined]


def _stop(server: subprocess.Popen[bytes], client: object) -> None:
    """Ask the server to stop (it waits for its runs), then insist; then kill whatever is left of its process
    group. The run workers are the server's children in its session: a worker busy in a long step only sees a
    cancel at its next step boundary (Dagster checks interrupts between events), and would outlive the server
    as an orphan training for hours."""
    if server.poll() is None:
        try:
            client.shutdown_server()  # type: ignore[attr-defined]
            server.wait(timeout=30)
        except Exception:  # noqa: BLE001 (unreachable or slow: fall back to signals)
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left: the usual case
        os.killpg(server.pid, signal.SIGKILL)  # start_new_session made the server its group's leader


def _location(request_context: WorkspaceRequestContext) -> tuple[CodeLocation, RemoteRepository]:
    location = request_context.get_code_location(CODE_LOCATION)
    (repository,) = location.get_repositories().values()  # one Definitions object: one repository
    return location, repository


def launch(
    instance: dg.DagsterInstance,
    workspace: WorkspaceProcessContext,
    request: RunRequest,
    run_config: Mapping[str, object],
    *,
    run_id: str | None = None,
) -> dg.DagsterRun:
    """Create the run with its remote origin (as `dagster job launch` does) and start it on the instance's
    run launcher."""
    from dagster._core.definitions.selector import JobSubsetSelector

    request_context = workspace.create_request_context()
    location, repository = _location(request_context)
    remote_job = location.get_job(
        JobSubsetSelector(
            location_name=location.name,
            repository_name=repository.name,
            job_name=request.job,
            op_selection=None,
            asset_selection=request.asset_selection,
            asset_check_selection=None,
        )
    )
    plan = location.get_execution_plan(
        remote_job, run_config, step_keys_to_execute=None, known_state=None, instance=instance
    ).execution_plan_snapshot
    run = instance.create_run(
        job_name=remote_job.name,
        run_id=run_id,
        run_config=run_config,
        status=None,
        tags={**remote_job.tags, **request.tags},
        root_run_id=None,
        parent_run_id=None,
        step_keys_to_execute=plan.step_keys_to_execute,
        execution_plan_snapshot=plan,
        job_snapshot=remote_job.job_snapshot,
        parent_job_snapshot=remote_job.parent_job_snapshot,
        asset_selection=request.asset_selection,
        asset_check_selection=None,
        resolved_op_selection=remote_job.resolved_op_selection,
        op_selection=None,
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
        asset_graph=repository.asset_graph,
    )
    return instance.launch_run(run.run_id, request_context)


def watch(
    instance: dg.DagsterInstance,
    run_id: str,
    on_event: Callable[[dg.EventLogEntry], None],
    *,
    timeout_s: float | None = None,
) -> dg.DagsterRun:
    """Poll the run until it finishes, handing each progress event to `on_event` once, in order."""
    cursor: str | None = None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        # The status is read before the events, so the events of a finished run are all read on the last pass.
        run = instance.get_run_by_id(run_id)
        assert run is not None, f"run {run_id} vanished from the instance"
        records = instance.get_records_for_run(run_id, cursor=cursor, of_type=PROGRESS_EVENTS)
        for record in records.records:
            on_event(record.event_log_entry)
        cursor = records.cursor if records.records else cursor
        if run.is_finished or (deadline is not None and time.monotonic() > deadline):
            return run
        time.sleep(POLL_S)


def mark_canceled(instance: dg.DagsterInstance, run_id: str, why: str) -> None:
    """Record a run whose worker is gone (killed with the code server) but that never reported its end."""
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished:
        instance.report_run_canceled(run, message=why)


def terminate(instance: dg.DagsterInstance, run_id: str) -> None:
    """Cancel a run through the launcher that started it; a run that never reached its worker is marked
    canceled directly (the launcher has nothing to stop)."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.is_finished:
        return
    if not instance.run_launcher.terminate(run_id):
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.CANCELING):
            instance.report_run_canceled(run, message="Canceled by crypto-lab before its worker started.")


def failure_chain(error: object) -> list[str]:
    """A serialized error and its causes, outermost first (Dagster wraps the user's exception in its own)."""
    chain = []
    while error is not None:
        chain.append(error.message.strip())  # type: ignore[attr-defined]
        error = error.cause  # type: ignore[attr-defined]
    return chain
