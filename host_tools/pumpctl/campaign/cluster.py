"""The Dask side of a campaign: a LocalCluster on this machine (one worker
process per core, one thread each: every task drives its own MicroPython
emulator, a process of its own), or an existing cluster by its scheduler's
address. Patients are tasks; their rows come back as they finish."""
from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from typing import Any, Callable, Iterator

from pumpctl.campaign import patient


class ClusterError(RuntimeError):
    """The cluster could not be started or reached."""


@contextlib.contextmanager
def client_for(scheduler: str | None, workers: int, timeout_s: float = 20.0) -> Iterator[tuple[Any, str]]:
    """A dask.distributed Client and a line describing the cluster."""
    from dask.distributed import Client, LocalCluster
    # The cluster's own chatter (and its shutdown warnings) stays out of the user's terminal.
    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # The scheduler's HTTP server moves to a free port when 8787 is taken: no news for the user.
    warnings.filterwarnings("ignore", message="Port .* is already in use")
    cluster = None
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout="%ds" % timeout_s)
            except (OSError, TimeoutError) as e:
                raise ClusterError("cannot reach the Dask scheduler at %s (%s): is `dask scheduler` running there, "
                                   "and the address tcp://HOST:PORT?" % (scheduler, e)) from None
            try:
                client.wait_for_workers(1, timeout=timeout_s)
            except (TimeoutError, OSError):
                client.close()
                raise ClusterError("the Dask scheduler at %s has no workers (waited %.0f s): start one with `dask "
                                   "worker %s --nthreads 1`" % (scheduler, timeout_s, scheduler)) from None
            n = len(client.scheduler_info(n_workers=-1)["workers"])
            what = "the Dask cluster at %s (%d worker%s)" % (scheduler, n, "" if n == 1 else "s")
        else:
            try:
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None,  # type: ignore[arg-type]  # None: no dashboard
                                       silence_logs=logging.ERROR)
            except OSError as e:
                raise ClusterError("cannot start a local Dask cluster: %s" % e) from None
            client = Client(cluster)
            what = "a local Dask cluster (%d worker%s x 1 thread)" % (workers, "" if workers == 1 else "s")
        try:
            yield client, what
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
    finally:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)


def run(client, specs: list[dict[str, Any]], on_row: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Runs every patient on the cluster; rows in the order they finish. On
    Ctrl-C the patients not started are cancelled and the emulators running
    on the workers are ended (by their pids, kept by the workers), then
    KeyboardInterrupt goes on."""
    from dask.distributed import as_completed
    futures = [client.submit(patient.run_patient, spec, key="patient-%d-%d-%s" % (
        spec["seed"], spec["index"], os.urandom(4).hex()), pure=False) for spec in specs]
    rows = []
    try:
        for fut in as_completed(futures):
            try:
                row = fut.result()
            except Exception as e:  # the worker itself died (run_patient never raises)
                spec = specs[futures.index(fut)]
                row = {"patient": spec["index"], "seed": spec["seed"], "drug": spec["drug"], "fault": spec["fault"],
                       "years": 0.0, "error": "worker lost: %s: %s" % (type(e).__name__, e)}
            rows.append(row)
            on_row(row)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            client.cancel(futures)
        with contextlib.suppress(Exception):
            client.run(patient.kill_emulators, wait=True)
        time.sleep(0.2)
        raise
    return rows
