"""Content-addressed artefact store: every stage caches its output under a key derived from
what it reads.

Layout: ``<cache>/<stage>/<hash>/artifact.pt`` plus ``config.json`` (the key) beside it, and a
``work/`` folder for resumable checkpoints while the stage runs. Every file written by
:func:`atomic_save` (artefacts and checkpoints) gets a ``<name>.sha256`` sidecar and is
written to a temporary name and renamed into place, so a file that exists is complete, and
:func:`safe_load` refuses one whose bytes changed since (a damaged disk, a partial copy).
The cache root is ``$OOD_CACHE`` or ``<repo>/.cache`` (ignored by git).

A stage's key comes from one mechanism, :func:`stage_key`: its declared :class:`Stage`
(name, version, the profile fields it reads), the keys of its inputs and the fingerprint of
the data splits it reads. Bump a stage's ``version`` when its behaviour changes, so old
artefacts are not reused.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .config import config_hash, to_dict
from .runtime import set_threads

def project_root() -> Path:
    """Where caches, results and data live, never inside the installed package: ``$OOD_HOME``,
    else the nearest folder at or above the working folder holding a ``pyproject.toml`` or
    ``.git`` (a clone of this repository, from its notebooks/ too), else the working folder."""
    if os.environ.get("OOD_HOME"):
        return Path(os.environ["OOD_HOME"]).expanduser().resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").exists() or (folder / ".git").exists():
            return folder
    return cwd


def cache_root() -> Path:
    """``$OOD_CACHE``, else ``.cache/`` in :func:`project_root`."""
    return Path(os.environ.get("OOD_CACHE", project_root() / ".cache")).expanduser()


def stage_dir(stage: str, config) -> Path:
    return cache_root() / stage / config_hash(config)


# ------------------------------------------------------------------------------ integrity
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to ``path`` via a temporary file and an atomic rename, then its SHA-256 beside
    it (``<name>.sha256``, renamed into place the same way). The file lands first: a run stopped
    between the two renames leaves a file its old checksum refuses (:func:`load_checkpoint` drops
    it), never a checksum that vouches for a file not yet there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    digest = file_sha256(tmp)
    sums = _checksum_path(path)
    tmp_sums = sums.with_name(f".{sums.name}.{os.getpid()}.tmp")
    tmp_sums.write_text(digest + "\n")
    os.replace(tmp, path)
    os.replace(tmp_sums, sums)


def load_checkpoint(path: Path, what: str = "training") -> Any | None:
    """A resumable checkpoint written by :func:`atomic_save`, or None when there is none. A damaged
    or unchecked one is dropped, saying which and that ``what`` starts again from the beginning
    (a checkpoint only saves time; the artefact it leads to is checked on its own)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return safe_load(path)
    except RuntimeError as err:
        print(f"[checkpoint] dropping {path.name} in {path.parent.name}/ ({err}); {what} starts from the beginning")
        path.unlink(missing_ok=True)
        _checksum_path(path).unlink(missing_ok=True)
        return None


def safe_load(path: Path) -> Any:
    """Load a file written by :func:`atomic_save` after checking its SHA-256; a missing or
    different checksum, or a file torch cannot read, stops with what to delete."""
    path = Path(path)
    fix = f"delete {path.parent} (the stage recomputes it) and run again"
    sums = _checksum_path(path)
    if not sums.exists():
        raise RuntimeError(f"artefact {path} has no checksum file {sums.name}: it was written by an older "
                           f"version or not completely; {fix}.")
    expected, actual = sums.read_text().strip(), file_sha256(path)
    if expected != actual:
        raise RuntimeError(f"artefact {path} is damaged: its SHA-256 is {actual[:16]}…, "
                           f"{sums.name} says {expected[:16]}…; {fix}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle mismatch, ...
        raise RuntimeError(f"cannot read artefact {path} ({type(err).__name__}: {err}); it was written by an "
                           f"incompatible version: {fix}.") from err


# ------------------------------------------------------------------------------ stage keys
@dataclasses.dataclass(frozen=True)
class Stage:
    """A cached stage: ``reads`` lists the profile fields its own computation reads, as
    ``"section"`` (every field of ``profile.section``) or ``"section.field"``; the fields its
    inputs read enter through their keys. ``version``: bump when the stage's behaviour
    changes (a bug fix, a new default inside the code), so no stale artefact is reused."""

    name: str
    version: int
    reads: tuple = ()


def read_fields(profile, reads) -> dict:
    """``{"section.field" or "section": value}`` for the declared ``reads`` of ``profile``."""
    values = {}
    for path in reads:
        obj = profile
        for part in path.split("."):
            obj = getattr(obj, part)   # AttributeError names a bad declaration
        values[path] = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    return json.loads(json.dumps(values, default=str))


def stage_key(stage: Stage, profile=None, *, inputs: dict | None = None, data: dict | None = None, **extra) -> dict:
    """The cache key of ``stage``: its name and version, the values of the fields it reads,
    the keys of its ``inputs`` (``{role: key}``), the ``data`` fingerprints of the splits it
    reads and any ``extra`` arguments of the call (a seed, a loss, a split)."""
    key = {"stage": stage.name, "version": stage.version}
    if stage.reads:
        key["reads"] = read_fields(profile, stage.reads)
    if inputs:
        key["inputs"] = {role: config_hash(k) for role, k in inputs.items()}
    if data:
        key["data"] = data
    key.update(extra)
    return key


def tensor_fingerprint(*tensors) -> str:
    """16-hex-digit SHA-256 of tensors' shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------ the store
def cached(stage: str | Stage, config, compute: Callable[[Path], Any], *, verbose: bool = True) -> Any:
    """Load the artefact of ``stage`` for ``config`` (its key), or compute and store it.

    ``compute(workdir)`` gets a folder for resumable checkpoints (kept if it is
    interrupted, removed once the artefact is stored) and returns a torch-saveable object
    of tensors, numbers, strings, lists and dicts.

    With several processes (``torchrun``, ``accelerate launch``) the process group is joined
    first (:func:`process_role`); only the main process takes the folder's lock, every process
    computes (the training loops split batches between them), only the main one writes, and
    every process then returns the stored artefact, so all ranks hold the same model.
    """
    name = stage.name if isinstance(stage, Stage) else stage
    folder = stage_dir(name, config)
    path = folder / "artifact.pt"
    main, wait = process_role()
    if path.exists():
        return _load(name, path, verbose and main)
    with _computing(folder, take=main):
        wait()   # the other ranks wait until the main one holds the lock
        if path.exists():    # another run sharing this cache computed it while this one waited
            return _load(name, path, verbose and main, ", computed by another run")
        return _compute(name, folder, path, config, compute, main, wait, verbose)


def load_artifact(path: Path, stage: str | None = None) -> Any:
    """A stored artefact, checked twice: its bytes against its checksum (:func:`safe_load`), and
    the stage and key it was stored under against ``stage`` and the folder it is in, so a valid
    artefact copied into another key's folder is refused, not served. Artefacts written before
    this binding (no record) load as they are."""
    path = Path(path)
    art = safe_load(path)
    if not (isinstance(art, dict) and "__artifact__" in art):
        return art
    meta, key = art["__artifact__"], path.parent.name
    if meta["key"] != key or (stage is not None and meta["stage"] != stage):
        raise RuntimeError(f"artefact {path} was stored by stage {meta['stage']!r} under key {meta['key']}, "
                           f"not by {stage or meta['stage']!r} under {key}: it was copied or moved here. Delete "
                           f"{path.parent} (the stage recomputes it) and run again.")
    return art["value"]


def _load(name: str, path: Path, verbose: bool, how: str = "") -> Any:
    art = load_artifact(path, name)
    if verbose:
        _note("loaded", f"[{name}] loaded cached artefact {path.parent.name}{how} (checksum verified)")
    return art


# Cache events: one line each to the "ood_lib.cache" logger (the CLI shows them) and to
# <cache>/cache.log, counted so that a notebook cell says "3 artefacts loaded, 1 computed" once
# (summarise_cells) instead of a line per artefact.
LOG = logging.getLogger("ood_lib.cache")
EVENTS: collections.Counter = collections.Counter()


def _note(event: str, line: str) -> None:
    EVENTS[event] += 1
    LOG.info(line)
    try:
        with open(cache_root() / "cache.log", "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
    except OSError:
        pass   # a read-only cache still serves artefacts


def cache_summary(events: collections.Counter) -> str:
    """``"12 artefacts loaded, 2 computed"``, or "" when nothing was."""
    if not events:
        return ""
    n_loaded, n_computed = events.get("loaded", 0), events.get("computed", 0)
    parts = ([f"{n_loaded} artefact{'s' * (n_loaded != 1)} loaded"] if n_loaded else []) + \
            ([f"{n_computed} computed"] if n_computed else [])
    return f"[cache] {', '.join(parts)} (each in cache.log of the cache folder)"


def summarise_cells() -> None:
    """In an IPython kernel, end each cell that touched the cache with one :func:`cache_summary`
    line; elsewhere nothing. Registered once (``import ood_lib`` calls it)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None or getattr(ip, "_ood_cache_summary", False):
        return
    start = {}

    def before(*_):
        start.clear()
        start.update(EVENTS)

    def after(*_):
        line = cache_summary(EVENTS - collections.Counter(start))
        if line:
            print(line)

    ip.events.register("pre_run_cell", before)
    ip.events.register("post_run_cell", after)
    ip._ood_cache_summary = True


STAGE_LOG_ENV = "OOD_STAGE_LOG"


def record_stage(stage: str, key: str, seconds: float) -> None:
    """Append one computed stage's own seconds to ``$OOD_STAGE_LOG`` (no-op when unset; read by
    :mod:`ood_lib.timings`). A log that cannot be written is reported, never a reason to lose
    the stage's result."""
    path = os.environ.get(STAGE_LOG_ENV)
    if path:
        try:
            with open(path, "a") as fh:
                fh.write(f"{stage}\t{key}\t{seconds:.2f}\n")
        except OSError as err:
            print(f"[timings] cannot write {STAGE_LOG_ENV}={path}: {err}")


def seconds_before(workdir: Path) -> float:
    """Seconds the runs interrupted before this one spent computing the stage in ``workdir`` (a
    resumed stage's total time is these plus its own)."""
    spent = Path(workdir) / SPENT_FILE
    return float(spent.read_text()) if spent.exists() else 0.0


SPENT_FILE = ".seconds_spent"


def _compute(name, folder: Path, path: Path, config, compute, main: bool, wait, verbose: bool) -> Any:
    """Run ``compute`` in the stage's work folder; the main process stores and logs the result."""
    workdir = folder / "work"
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(to_dict(config), indent=1, sort_keys=True))
    wait()
    threads = set_threads()
    before = seconds_before(workdir) if main else 0.0
    start = time.perf_counter()
    _NESTED.append(0.0)
    try:
        result = compute(workdir)
    except BaseException:       # interrupted: keep the time spent, for the resumed run's total
        if main and workdir.exists():
            (workdir / SPENT_FILE).write_text(f"{before + time.perf_counter() - start - _NESTED[-1]:.3f}")
        raise
    finally:
        inner = _NESTED.pop()
    seconds = time.perf_counter() - start
    _NESTED[-1] += seconds
    if main:
        atomic_save({"__artifact__": {"stage": name, "key": folder.name, "threads": threads,
                                      "version": config.get("version") if isinstance(config, dict) else None},
                     "value": result}, path)
        shutil.rmtree(workdir, ignore_errors=True)
        record_stage(name, folder.name, before + seconds - inner)
        if verbose:
            _note("computed", f"[{name}] computed and cached {folder.name} in {before + seconds:.0f} s ({threads} threads"
                              + (f"; {before:.0f} s of it before a resume" if before else "") + ")")
    wait()
    # one process: what it computed is what it stored; several: every rank reads the stored one
    return result if wait is _no_barrier else load_artifact(path, name)


# Seconds spent in stages computed inside the stage now computing (one entry per level), so a
# stage's recorded time is its own work only.
_NESTED = [0.0]


def _no_barrier() -> None:
    pass


def process_role() -> tuple[bool, Callable[[], None]]:
    """(is this the main process, a barrier): one process unless several were launched. Under
    ``torchrun`` or ``accelerate launch`` (``WORLD_SIZE`` > 1) the process group is joined here,
    before any lock is taken: a rank holding a lock while another waits in the group's set-up
    would deadlock."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())   # gloo on a CPU machine: the processes share the work
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank() == 0, dist.barrier
    return True, _no_barrier


@contextlib.contextmanager
def _computing(folder: Path, take: bool):
    """Hold ``folder``'s lock while its artefact is computed, so that two runs sharing one cache
    (two notebooks, a sweep beside ``./run_all.sh``) never train the same stage into the same
    checkpoint folder: the second waits, then loads what the first stored. Stages form a DAG, so
    nested locks cannot deadlock. Taken only where ``take`` (the main process of a run; the other
    ranks of a distributed run follow it through barriers), and not where ``fcntl`` is missing
    (Windows)."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if not take or fcntl is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
