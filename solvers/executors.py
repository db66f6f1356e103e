"""Many independent tasks in process, in a local process pool, or on a Ray cluster.

``map_tasks(fn, items, executor=...)`` is ``[fn(x) for x in items]``, in input order, run

- ``executor=None`` (default): in this process, one after the other;
- ``"processes"``: a local pool of ``workers`` processes (``concurrent.futures`` with the
  ``spawn`` start method, safe beside torch's threads); ``fn`` and the items must pickle;
- ``"ray"``: Ray tasks (``pip install "pruneopt[ray]"``), on the cluster at ``address`` (as
  ``ray.init(address=...)`` takes it) or, when none is running and no address is given, on a
  local one started with ``workers`` CPUs (stopped again when the call started it).

Results are the same whichever executor runs them (each task is deterministic given its
item). A task that raises makes the whole call raise that error (remaining tasks are
cancelled); a worker that dies is a :class:`WorkerDied` (a ``RuntimeError``) naming the
item's position (Ray tasks are not retried: a task that kills its worker would kill the next
one too). Nothing is returned partially, so a caller that writes files writes them only
after ``map_tasks`` returns. The progress bar (``progress=True``) advances as each task
finishes, whichever worker ran it. An ``address`` that does not answer within
:data:`CONNECT_SECONDS` is a ``ValueError`` before Ray is started (Ray itself would wait
about a minute).

``with executor_session(executor, workers, address):`` keeps one pool of processes or one
Ray session for every ``map_tasks`` call inside it (a job of many stages or windows pays the
start-up once: a spawn pool imports torch in every worker, a local Ray cluster takes
seconds); outside a session each call starts and stops its own.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

EXECUTORS = ("processes", "ray")
CONNECT_SECONDS = 5.0  # how long an address may take to accept a TCP connection
#: The process pool of the innermost open :func:`executor_session` ("processes"), if any.
SESSION_POOLS: list[cf.ProcessPoolExecutor] = []


class WorkerDied(RuntimeError):
    """A worker process or Ray worker died while running a task; nothing was returned."""


def check_executor(executor: str | None) -> str | None:
    """``executor`` validated: None, "processes" or "ray" (ValueError otherwise)."""
    if executor is not None and executor not in EXECUTORS:
        raise ValueError(f"executor must be None (in process), 'processes' or 'ray', got "
                         f"{executor!r}")
    return executor


def default_workers() -> int:
    """The local worker count: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def progress_bar(total: int, progress: bool, desc: str | None):
    """A tqdm bar over ``total`` tasks (disabled when ``progress`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not progress, desc=desc, leave=False)


def map_tasks(fn: Callable[[Any], Any], items: Iterable[Any], *, executor: str | None = None,
              workers: int | None = None, address: str | None = None,
              progress: bool = False, desc: str | None = None) -> list[Any]:
    """``[fn(x) for x in items]`` on ``executor`` (module docstring), in input order."""
    check_executor(executor)
    items = list(items)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if address is not None and executor != "ray":
        raise ValueError("address is for executor='ray'")
    if executor is None or not items:
        out = []
        with progress_bar(len(items), progress, desc) as bar:
            for x in items:
                out.append(fn(x))
                bar.update()
        return out
    if executor == "processes":
        return _in_processes(fn, items, workers or default_workers(), progress, desc)
    return _on_ray(fn, items, workers, address, progress, desc)


@contextmanager
def executor_session(executor: str | None, workers: int | None = None,
                     address: str | None = None) -> Iterator[None]:
    """One pool of ``workers`` processes, or one Ray session (at ``address``, or a local
    cluster of ``workers`` CPUs unless Ray is already running), for every :func:`map_tasks`
    call inside the ``with`` block; closed at its end. ``executor=None``: nothing."""
    check_executor(executor)
    if executor is None:
        yield
    elif executor == "processes":
        with spawn_pool(workers or default_workers()) as pool:
            SESSION_POOLS.append(pool)
            try:
                yield
            finally:
                SESSION_POOLS.remove(pool)
    else:
        with ray_session(workers, address):
            yield


@contextmanager
def ray_session(workers: int | None, address: str | None) -> Iterator[None]:
    """Ray initialised inside the block: the running session if there is one, else one
    started here (at ``address`` after :func:`check_address`, or local with ``workers``
    CPUs) and shut down at the end."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    if address is None:
        kwargs["num_cpus"] = workers or default_workers()
    check_address(address)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ValueError(f"cannot reach a Ray cluster at {address!r}: {exc}") from exc
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def process_pool(workers: int, tasks: int) -> Iterator[cf.ProcessPoolExecutor]:
    """The open session's pool, or a new spawn pool of ``min(workers, tasks)`` processes
    shut down at the end of the block."""
    if SESSION_POOLS:
        yield SESSION_POOLS[-1]
        return
    with spawn_pool(min(workers, tasks)) as pool:
        yield pool


def spawn_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A pool of ``workers`` processes started with ``spawn`` (safe beside torch's threads)."""
    return cf.ProcessPoolExecutor(max_workers=workers,
                                  mp_context=multiprocessing.get_context("spawn"))


def _in_processes(fn, items: Sequence[Any], workers: int, progress: bool,
                  desc: str | None) -> list[Any]:
    out: list[Any] = [None] * len(items)
    with process_pool(workers, len(items)) as pool, \
            progress_bar(len(items), progress, desc) as bar:
        futures = {pool.submit(fn, x): i for i, x in enumerate(items)}
        try:
            for fut in cf.as_completed(futures):
                i = futures[fut]
                try:
                    out[i] = fut.result()
                except cf.process.BrokenProcessPool as exc:
                    raise WorkerDied(f"a worker process died (task {i} of {len(items)} "
                                       f"did not finish); nothing was returned") from exc
                bar.update()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return out


def apply_task(fn: Callable[[Any], Any], x: Any) -> Any:
    """``fn(x)``: the one remote function (any picklable callable runs through it)."""
    return fn(x)


@functools.cache
def ray_task():
    """``apply_task`` as a Ray remote function, made once per process (Ray exports it to each
    new session itself). Not retried: a task that killed its worker would kill the next."""
    return import_ray().remote(max_retries=0)(apply_task)


def import_ray():
    """The ``ray`` module, or a ValueError naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError("executor='ray' needs Ray: pip install \"pruneopt[ray]\"") from exc
    return ray


def check_address(address: str | None, timeout: float = CONNECT_SECONDS) -> None:
    """ValueError unless ``address`` (``"host:port"``, ``"[ipv6]:port"`` or
    ``"ray://host:port"``; ``None`` and ``"auto"`` are left to Ray) accepts a TCP
    connection within ``timeout`` seconds."""
    if address is None or address == "auto":
        return
    if not isinstance(address, str):
        raise ValueError(f"address must be a string 'host:port', got {type(address).__name__}")
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must look like 'host:port' or 'ray://host:port' (as "
                         f"ray.init takes it), got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ValueError(f"cannot reach a Ray cluster at {address!r} ({exc}); start one there "
                         f"(ray start --head) or pass address=None for a local "
                         f"cluster") from None


def _on_ray(fn, items: Sequence[Any], workers: int | None, address: str | None,
            progress: bool, desc: str | None) -> list[Any]:
    ray = import_ray()
    with ray_session(workers, address):
        task = ray_task()
        fn_ref = ray.put(fn)
        refs = [task.remote(fn_ref, x) for x in items]
        where = {ref: i for i, ref in enumerate(refs)}
        out: list[Any] = [None] * len(items)
        pending = list(refs)
        with progress_bar(len(items), progress, desc) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                if pending:  # and whatever else finished meanwhile, without waiting
                    more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                    done += more
                for ref in done:
                    i = where[ref]
                    try:
                        out[i] = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        for p in pending:
                            ray.cancel(p)
                        cause = exc.as_instanceof_cause()
                        raise cause from None
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                            ray.exceptions.OutOfMemoryError) as exc:
                        for p in pending:
                            ray.cancel(p)
                        raise WorkerDied(f"a Ray worker died while running task {i} of "
                                           f"{len(items)}; nothing was returned") from exc
                    bar.update()
        return out
