"""Where a sweep's trials run: a Ray session from the environment, shipping this package to the workers.

- No address (and no `RAY_ADDRESS`): a local Ray is started for the session and shut down after it.
- `RAY_ADDRESS` (or `address`) set: connect to that cluster, disconnect after. Ray 2.60 clusters use token
  authentication by default: Ray itself reads the token from `RAY_AUTH_TOKEN` (or the file `RAY_AUTH_TOKEN_PATH`,
  or `~/.ray/auth_token`), so the token is never part of a config.
- Already connected (a notebook, a test that called `ray.init`): the connection is used as it is and left open.

Code reaches the workers through the job's `runtime_env` only: `py_modules` uploads the `crypto_assets` package
(and any `extra_modules`, e.g. a plug-in family's package) to the cluster, and `working_dir` is an empty folder,
because without one Ray puts the driver's current directory on every worker's `sys.path`, so a local worker would
silently import the checkout instead of what was shipped, and a real cluster would not have that path at all.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

ADDRESS_ENV = "RAY_ADDRESS"
EXCLUDES = ["__pycache__", "*.pyc"]


@dataclass(frozen=True)
class RaySession:
    address: str
    """The cluster's GCS address (`host:port`)."""
    started_locally: bool
    startup_seconds: float
    """Time `ray.init` took (start-up of a local Ray, or the connection)."""


def runtime_env(working_dir: str, extra_modules: Sequence[ModuleType] = ()) -> dict[str, Any]:
    import crypto_assets

    return {"py_modules": [crypto_assets, *extra_modules], "working_dir": working_dir, "excludes": EXCLUDES}


@contextmanager
def ray_session(
    address: str | None = None, *, num_cpus: int | None = None, extra_modules: Sequence[ModuleType] = ()
) -> Iterator[RaySession]:
    """A Ray connection for the block (see the module docstring). `address` overrides `RAY_ADDRESS`; `num_cpus`
    caps a locally started Ray (ignored when connecting)."""
    import ray

    if ray.is_initialized():
        yield RaySession(ray.get_runtime_context().gcs_address, started_locally=False, startup_seconds=0.0)
        return
    target = address or os.environ.get(ADDRESS_ENV) or None
    with tempfile.TemporaryDirectory(prefix="crypto_assets_ray_") as empty:
        started = time.perf_counter()
        if target is None:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                runtime_env=runtime_env(empty, extra_modules),
            )
        else:
            ray.init(address=target, runtime_env=runtime_env(empty, extra_modules))
        session = RaySession(
            ray.get_runtime_context().gcs_address,
            started_locally=target is None,
            startup_seconds=time.perf_counter() - started,
        )
        try:
            yield session
        finally:
            ray.shutdown()
