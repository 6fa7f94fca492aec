"""The app's caching and background work: the one place that decides what is kept, under which
key, and for how long.

- ``cache_key`` is the one way to build a cache key (plain hashable parts only: ids, hashes,
  settings; never arrays), ``model_key`` names a checkpoint (zoo folder, id, file sha256).
- ``bounded_cache(max_bytes)`` memoises a function in a process-wide LRU bounded by the bytes
  its values hold (numpy arrays, tensors, bytes, Plotly figures are measured), so a 39-megapixel
  photo cannot fill the server: least recently used values are dropped first, and a value larger
  than the whole budget is returned without being kept. Arguments whose names start with ``_``
  are not part of the key (as with ``st.cache_data``). Values are shared by every session and
  returned as they are (no copy): their numpy arrays are made read-only.
- ``background(key, work, owner)`` runs slow work (the Adversarial page's curves) on one worker
  thread, reports its progress, and stops it when no session waits for it any more.
- ``configure_torch_threads`` caps torch's threads once per process (run on import): with all
  cores, two OpenMP threads spin-wait on each other whenever another process holds a core, and a
  10-step attack took minutes instead of seconds.

Results of the pages: ``analysis_for``, ``posthoc_for``, ``overlay_for`` (below), the Masks
page's in ``pages/ui/mask_compute.py``, the Adversarial page's in ``pages/4_Adversarial.py``;
decoded uploads, display copies and thumbnails in ``pages/ui/widgets.py`` and figures in
``pages/ui/views.py`` are kept in bounded caches too (so this module never imports widgets at
load time).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import inspect
import os
import sys
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator

import numpy as np
import torch

from ltpa.inference import Analysis, StageMap, analyse, posthoc
from ltpa.maps import overlay
from ltpa.zoo import LoadedModel, zoo_dir

if TYPE_CHECKING:
    from pages.ui.widgets import ChosenImage

MiB = 1 << 20
THREADS_ENV = "LTPA_APP_THREADS"


# ----------------------------------------------------------------------------- process setup
def configure_torch_threads() -> int:
    """Cap torch's intra-op threads for the app and return the number used.

    ``LTPA_APP_THREADS`` sets it; the default is half the cores (1 on a 2-core machine): one
    thread for the page being drawn and one for background work, so neither waits on a thread
    that another process has descheduled."""
    requested = os.environ.get(THREADS_ENV, "")
    threads = int(requested) if requested.isdigit() and int(requested) > 0 else max(1, (os.cpu_count() or 1) // 2)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def _return_freed_memory_to_the_system() -> None:
    """glibc only: keep large buffers (images, overlays, PNGs) in their own mappings, given back
    on free. By default glibc raises its mmap threshold after the first large free, after which
    such buffers come from the heap and the resident memory of a server that handled one large
    photo never comes down. Also limits the per-thread arenas (Streamlit runs each session's
    script in its own thread)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_mmap_threshold, m_arena_max = -3, -8
    libc.mallopt(m_mmap_threshold, 4 * MiB)
    libc.mallopt(m_arena_max, 2)


def release_memory() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``); a no-op elsewhere."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


configure_torch_threads()
_return_freed_memory_to_the_system()


# ----------------------------------------------------------------------------- keys and sizes
Key = tuple[Hashable, ...]
_KEY_TYPES = (str, int, float, bool, type(None), bytes)


def cache_key(*parts: Any) -> Key:
    """A cache key from plain parts (str, numbers, None, bytes, and tuples/lists of them).

    Raises TypeError for anything else (an array would be hashed by identity, or not at all)."""
    def plain(part: Any) -> Hashable:
        if isinstance(part, _KEY_TYPES):
            return part
        if isinstance(part, (tuple, list)):
            return tuple(plain(p) for p in part)
        raise TypeError(f"cache keys take ids, hashes and settings, not {type(part).__name__}")
    return tuple(plain(p) for p in parts)


def digest(data: bytes) -> str:
    """The sha256 of some bytes (keys hold a digest, not the data: keys are not counted in a
    cache's byte budget)."""
    return hashlib.sha256(data).hexdigest()


def load_model(model_id: str) -> LoadedModel:
    """``pages.ui.widgets.load_model``, imported when called: widgets keeps its caches in
    ``bounded_cache`` (below), so this module must not import widgets while it loads."""
    from pages.ui.widgets import load_model as load_shared_model
    return load_shared_model(model_id)


def model_key(model_id: str) -> Key:
    """What identifies a zoo checkpoint: the zoo folder, the id and the file's sha256."""
    loaded = load_model(model_id)
    return cache_key(str(zoo_dir()), model_id, str(loaded.entry.card.get("sha256", "")))


def size_of(value: Any) -> int:
    """Bytes held by ``value``: numpy arrays, tensors, bytes and text exactly, containers,
    dataclasses, NamedTuples and objects by their contents (Plotly figures by their JSON data);
    each object counted once."""
    seen: set[int] = set()

    def measure(item: Any) -> int:
        if id(item) in seen:
            return 0
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            return int(item.nbytes) + 112
        if isinstance(item, torch.Tensor):
            return int(item.element_size() * item.nelement()) + 80
        if isinstance(item, (bytes, bytearray, str)):
            return sys.getsizeof(item)
        if isinstance(item, dict):
            return sys.getsizeof(item) + sum(measure(k) + measure(v) for k, v in item.items())
        if isinstance(item, (list, tuple, set, frozenset, deque)):
            return sys.getsizeof(item) + sum(measure(v) for v in item)
        if is_dataclass(item) and not isinstance(item, type):
            return sys.getsizeof(item) + sum(measure(getattr(item, f.name)) for f in fields(item))
        if hasattr(item, "to_plotly_json"):
            return sys.getsizeof(item) + measure(item.to_plotly_json())
        if hasattr(item, "__dict__") and not isinstance(item, type):
            return sys.getsizeof(item) + measure(vars(item))
        return sys.getsizeof(item)

    return measure(value)


def freeze(value: Any) -> Any:
    """Make the numpy arrays inside ``value`` read-only (values are shared by all sessions)."""
    seen: set[int] = set()

    def walk(item: Any) -> None:
        if id(item) in seen or isinstance(item, (str, bytes, int, float, type(None))):
            return
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            item.flags.writeable = False
        elif isinstance(item, dict):
            for v in item.values():
                walk(v)
        elif isinstance(item, (list, tuple)):
            for v in item:
                walk(v)
        elif is_dataclass(item) and not isinstance(item, type):
            for f in fields(item):
                walk(getattr(item, f.name))

    walk(value)
    return value


# ----------------------------------------------------------------------------- the bounded caches
class BoundedCache:
    """A thread-safe LRU mapping of keys to values, bounded by the bytes its values hold."""

    def __init__(self, name: str, max_bytes: int) -> None:
        self.name, self.max_bytes = name, int(max_bytes)
        self._items: OrderedDict[Key, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Key) -> tuple[bool, Any]:
        """``(True, value)`` when cached (it becomes the most recently used), else ``(False, None)``."""
        with self._lock:
            if key not in self._items:
                return False, None
            self._items.move_to_end(key)
            return True, self._items[key][0]

    def put(self, key: Key, value: Any) -> Any:
        """Keep ``value`` (dropping the least recently used values to stay within the budget)
        unless it alone exceeds the budget; returns it."""
        size = size_of(value)
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            if size <= self.max_bytes:
                self._items[key] = (value, size)
                self._bytes += size
            while self._bytes > self.max_bytes:
                self._bytes -= self._items.popitem(last=False)[1][1]
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


CACHES: dict[str, BoundedCache] = {}


def bounded_cache(max_bytes: int, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Memoise a function in a ``BoundedCache`` of ``max_bytes`` (registered in ``CACHES``).

    The key is ``cache_key`` of the function's name and its arguments, except those whose names
    start with ``_`` (pass arrays that way, with their hash or id in a keyed argument)."""
    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(function)
        label = name or f"{function.__module__}.{function.__qualname__}"
        cache = CACHES.setdefault(label, BoundedCache(label, max_bytes))

        @functools.wraps(function)
        def cached(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            key = cache_key(label, *[v for n, v in bound.arguments.items() if not n.startswith("_")])
            hit, value = cache.get(key)
            if hit:
                return value
            return cache.put(key, freeze(function(*args, **kwargs)))

        cached.cache = cache  # type: ignore[attr-defined]
        return cached
    return decorate


def cached_bytes() -> dict[str, int]:
    """Bytes held by each bounded cache (for benchmarks and tests)."""
    return {name: cache.bytes for name, cache in CACHES.items()}


def clear_caches() -> None:
    """Empty every bounded cache."""
    for cache in CACHES.values():
        cache.clear()


# ----------------------------------------------------------------------------- background work
class Stopped(Exception):
    """Raised inside background work whose result nobody waits for any more."""


@dataclass
class Job:
    """One piece of background work: its state, progress, and result or error."""

    key: Key
    work: Callable[[Callable[[float], None]], Any]
    owners: set[str] = field(default_factory=set)
    state: str = "queued"  # queued, running, done, failed, stopped
    progress: float = 0.0
    result: Any = None
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "stopped")


class BackgroundRunner:
    """Runs jobs one at a time on a daemon thread; finished results go to a bounded cache.

    A job runs once however many sessions ask for it; it is stopped (at its next progress report)
    when every session that asked has moved on (``release``)."""

    def __init__(self, max_bytes: int) -> None:
        self.results = CACHES.setdefault("background", BoundedCache("background", max_bytes))
        self._jobs: dict[Key, Job] = {}
        self._failed: OrderedDict[Key, Job] = OrderedDict()  # the last few failures, shown once asked
        self._queue: deque[Key] = deque()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._foreground = 0  # pages computing what a user waits for right now
        self._quiet = threading.Condition()

    def submit(self, key: Key, work: Callable[[Callable[[float], None]], Any], owner: str) -> Job:
        """The job for ``key``: finished from the cache, running, or queued now for ``owner``."""
        hit, value = self.results.get(key)
        if hit:
            return Job(key, work, state="done", progress=1.0, result=value)
        with self._lock:
            if key in self._failed:
                return self._failed[key]  # failures are shown, not retried on every rerun
            job = self._jobs.get(key)
            if job is None or job.stop.is_set():  # none, or one being stopped: start afresh
                job = Job(key, work)
                self._jobs[key] = job
                self._queue.append(key)
                self._start()
                self._lock.notify_all()
            job.owners.add(owner)
            return job

    def release(self, key: Key, owner: str) -> None:
        """``owner`` no longer waits for ``key``: stop it if nobody else does."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or job.finished:
                return
            job.owners.discard(owner)
            if not job.owners:
                job.stop.set()
                if job.state == "queued":
                    job.state = "stopped"
                    self._jobs.pop(key, None)

    @contextlib.contextmanager
    def foreground(self) -> Iterator[None]:
        """While inside, background jobs pause at their next progress report, so what a user is
        waiting for gets the CPU (on a 2-core machine shared with other work this matters)."""
        with self._quiet:
            self._foreground += 1
        try:
            yield
        finally:
            with self._quiet:
                self._foreground -= 1
                self._quiet.notify_all()

    def wait_idle(self, timeout: float = 600.0) -> bool:
        """Wait until no job is queued or running (for tests and benchmarks); True if idle."""
        with self._lock:
            return self._lock.wait_for(lambda: not any(not j.finished for j in self._jobs.values()),
                                       timeout)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="ltpa-background", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._queue))
                job = self._jobs.get(self._queue.popleft())
                if job is None or job.state != "queued" or job.stop.is_set():
                    continue
                job.state = "running"
            self._run(job)

    def _run(self, job: Job) -> None:
        def progress(share: float) -> None:
            with self._quiet:  # a page is computing a result its user waits for: let it
                self._quiet.wait_for(lambda: self._foreground == 0 or job.stop.is_set(), timeout=30)
            if job.stop.is_set():
                raise Stopped
            job.progress = max(job.progress, min(1.0, float(share)))

        try:
            result = job.work(progress)
        except Stopped:
            state, result, error = "stopped", None, None
        except Exception as failure:  # shown on the page; the worker goes on with the next job
            state, result, error = "failed", None, f"{type(failure).__name__}: {failure}"
        else:
            state, error = "done", None
            self.results.put(job.key, freeze(result))
        with self._lock:
            job.result, job.error, job.state, job.progress = result, error, state, 1.0 if state == "done" else job.progress
            if self._jobs.get(job.key) is job:
                self._jobs.pop(job.key)
            if state == "failed":
                self._failed[job.key] = job
                while len(self._failed) > 32:
                    self._failed.popitem(last=False)
            self._lock.notify_all()


BACKGROUND = BackgroundRunner(max_bytes=16 * MiB)


def background(key: Key, work: Callable[[Callable[[float], None]], Any], owner: str) -> Job:
    """Run ``work(progress)`` in the background once for ``key`` (see ``BackgroundRunner``)."""
    return BACKGROUND.submit(key, work, owner)


def foreground() -> contextlib.AbstractContextManager[None]:
    """Pause background work while computing what the user waits for (see ``BackgroundRunner``)."""
    return BACKGROUND.foreground()


# ----------------------------------------------------------------------------- results of the pages
@bounded_cache(max_bytes=16 * MiB)
def _analysis(model: Key, image_sha256: str, _model_id: str, _image: np.ndarray) -> Analysis:
    return analyse(load_model(_model_id), _image)


def analysis_for(model_id: str, chosen: ChosenImage) -> Analysis:
    """``ltpa.inference.analyse`` of the chosen image by a zoo model, cached per image and model."""
    return _analysis(model_key(model_id), chosen.sha256, model_id, chosen.array)


@bounded_cache(max_bytes=8 * MiB)
def _posthoc(model: Key, image_sha256: str, method: str, class_index: int | None,
             _model_id: str, _image: np.ndarray) -> StageMap:
    return posthoc(load_model(_model_id), _image, method, class_index)


def posthoc_for(model_id: str, chosen: ChosenImage, method: str = "grad_cam",
                class_index: int | None = None) -> StageMap:
    """``ltpa.inference.posthoc`` (``grad_cam`` or ``cam``) on the chosen image, cached."""
    return _posthoc(model_key(model_id), chosen.sha256, method, class_index, model_id, chosen.array)


# On-screen overlays are at most DISPLAY_MAX_SIDE (about 4 MiB each); full-resolution ones are
# made only for a download and not kept (a 39-megapixel overlay is 112 MiB).
@bounded_cache(max_bytes=48 * MiB)
def _overlay(image_key: str, map_key: Key, opacity: float, colormap: str, scaling: str,
             _native_map: np.ndarray, _image: np.ndarray) -> np.ndarray:
    return overlay(_image, _native_map, opacity=opacity, colormap=colormap, mode=scaling)


def overlay_for(chosen: ChosenImage, stage_map: StageMap, opacity: float, colormap: str,
                full_resolution: bool = False, scaling: str = "max") -> np.ndarray:
    """A stage's map blended over the chosen image (``ltpa.maps.overlay``).

    On screen very large images are drawn at ``DISPLAY_MAX_SIDE`` and their overlays cached;
    ``full_resolution`` gives the overlay at the image's own size (for a download), computed
    each time and not kept. ``scaling`` is an ``ltpa.maps`` normalisation mode: ``max``
    (a / peak) or ``minmax``."""
    if full_resolution:
        return overlay(chosen.array, stage_map.native, opacity=opacity, colormap=colormap, mode=scaling)
    image = chosen.shown()
    native = np.ascontiguousarray(stage_map.native, dtype=np.float32)
    map_key = cache_key(stage_map.stage, native.shape, digest(native.tobytes()))
    key = f"{chosen.sha256}:{image.shape[0]}x{image.shape[1]}"
    return _overlay(key, map_key, float(opacity), colormap, scaling, native, image)
