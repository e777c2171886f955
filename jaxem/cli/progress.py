"""Progress display and compile-time metering for the command line.

The fit is one compiled program, so progress is reported honestly from outside
it: a spinner with the elapsed time and the current stage ("compiling" while JAX
traces, lowers and compiles, the command's own stage otherwise), driven by a
background thread and :mod:`jax.monitoring` events. Nothing is added to the EM
loop.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time

import jax

__all__ = ["CompileMeter", "Progress", "progress_mode"]

# JAX records the duration of each compile stage under these names, and the start
# time of each as a scalar of the same name.
_COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_CACHE_WRITE = "/jax/compilation_cache/cache_misses"  # recorded when an entry is written

_active_meters: list[CompileMeter] = []
_listeners_registered = False


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS:
        for meter in list(_active_meters):
            meter.seconds += duration
            meter.finished += 1
            meter.in_progress = max(meter.in_progress - 1, 0)


def _on_scalar(event: str, value: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS:
        for meter in list(_active_meters):
            meter.started += 1
            meter.in_progress += 1


def _on_event(event: str, **kwargs) -> None:
    if event in (_CACHE_HIT, _CACHE_WRITE):
        for meter in list(_active_meters):
            if event == _CACHE_HIT:
                meter.cache_loaded += 1
            else:
                meter.cache_saved += 1


def _register_listeners() -> None:
    """Register the :mod:`jax.monitoring` listeners once per process (they cannot be
    removed); they forward to whichever meters are active."""
    global _listeners_registered
    if not _listeners_registered:
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        jax.monitoring.register_scalar_listener(_on_scalar)
        jax.monitoring.register_event_listener(_on_event)
        _listeners_registered = True


class CompileMeter:
    """Time JAX spends tracing, lowering and compiling while the meter is active.

    Attributes
    ----------
    seconds : float
        Tracing, lowering and compiling (or loading from the persistent cache).
    started, finished, in_progress : int
        Compile stages begun, ended and running now; ``in_progress`` tells a
        progress display whether a compilation is running (when this JAX version
        reports starts).
    cache_loaded, cache_saved : int
        Programs loaded from, and written to, the persistent compilation cache.
    """

    def __init__(self):
        self.seconds = 0.0
        self.started = 0
        self.finished = 0
        self.in_progress = 0
        self.cache_loaded = 0
        self.cache_saved = 0

    def __enter__(self) -> CompileMeter:
        _register_listeners()
        _active_meters.append(self)
        Progress.notify_meter(self)
        return self

    def __exit__(self, *exc_info) -> None:
        _active_meters.remove(self)
        Progress.notify_meter(None)

    @property
    def compiling(self) -> bool | None:
        """Whether a compilation is running; None if this JAX does not report starts."""
        if self.finished and not self.started:
            return None
        return self.in_progress > 0


class Progress:
    """Elapsed time and stage on stderr, from a background thread.

    Parameters
    ----------
    stream : text stream to write to (stderr).
    mode : ``"tty"`` (a spinner line rewritten in place), ``"lines"`` (one line per
        stage change, plus one every ``heartbeat`` seconds) or None (off).
    delay : seconds before anything is shown, so quick runs stay quiet.
    heartbeat : seconds between repeated lines in ``"lines"`` mode.
    """

    _current: Progress | None = None
    _FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, stream, mode: str | None, delay: float = 0.5, heartbeat: float = 10.0):
        self.stream = stream
        self.mode = mode
        self.delay = delay
        self.heartbeat = heartbeat
        self._stage = "starting"
        self._meter: CompileMeter | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0
        self._shown = False

    @classmethod
    def notify_meter(cls, meter: CompileMeter | None) -> None:
        """Let the running display follow ``meter`` (None: no meter active)."""
        if cls._current is not None:
            cls._current._meter = meter

    def stage(self, text: str) -> None:
        """Set what the program is doing (shown unless a compilation is running)."""
        self._stage = text

    def label(self) -> str:
        """What the display shows now."""
        meter = self._meter
        if meter is None:
            return self._stage
        compiling = meter.compiling
        if compiling is None:
            return f"compiling and {self._stage}"
        return "compiling" if compiling else self._stage

    def __enter__(self) -> Progress:
        if self.mode is not None:
            Progress._current = self
            self._start = time.perf_counter()
            self._thread = threading.Thread(target=self._loop, name="jaxem-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        Progress._current = None
        if self._shown:
            elapsed = time.perf_counter() - self._start
            if self.mode == "tty":
                self._write("\r\x1b[K")
            else:
                self._write(f"jaxem: done in {elapsed:.1f} s\n")

    def _loop(self) -> None:
        frames = itertools.cycle(self._FRAMES)
        last_label, last_line = None, 0.0
        while not self._stop.wait(0.1):
            elapsed = time.perf_counter() - self._start
            if elapsed < self.delay:
                continue
            self._shown = True
            label = self.label()
            if self.mode == "tty":
                self._write(f"\r\x1b[K{next(frames)} {label}… {elapsed:.1f} s")
            elif label != last_label or elapsed - last_line >= self.heartbeat:
                self._write(f"jaxem: {label}… ({elapsed:.1f} s)\n")
                last_label, last_line = label, elapsed

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # closed or broken stream
            self.stream.write(text)
            self.stream.flush()


def progress_mode(requested: bool | None, stream) -> str | None:
    """The :class:`Progress` mode for ``--progress``/``--no-progress`` (None: not given).

    Examples
    --------
    >>> import io
    >>> progress_mode(None, io.StringIO()), progress_mode(True, io.StringIO())
    (None, 'lines')
    """
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    if requested is False or (requested is None and not is_tty):
        return None
    return "tty" if is_tty else "lines"
