"""How the Numba backend compiles: the decorators every kernel module uses.

Compilation is the price of a fresh install (an empty cache), so it is kept
to what a call needs, and the slowest compilations do not hold up the first
calls:

* :func:`jit` / :func:`jit_inline`: plain lazy ``@njit`` with fastnn's
  options, for helpers called from other compiled code.
* :func:`kernel`: an entry point called from Python. It compiles on its
  first call per argument types, like ``@njit``, except that the arguments
  named in ``inputs`` (arrays it only reads) are typed read-only: a
  read-only array (``np.load(..., mmap_mode="r")``) and a writeable one run
  the same machine code instead of two compilations, and the writeable call
  still dispatches on an exact type match. With ``inline=True`` compiled
  callers take its body in (Numba's ``inline="always"``): a helper compiled
  on its own is one more compilation, and is optimised and compiled again
  inside every kernel it is linked into.
* :func:`variants`: ``(serial, parallel)`` kernels made from one function
  whose main loop is a ``prange`` (a plain ``range`` in the serial
  compilation). Callers index the pair with their size test,
  ``kernel[n >= threshold and threads() > 1](...)``, so a process whose
  calls stay small never compiles a parallel loop.
* :class:`Deferred`: a kernel whose fast compilation is slow to build (a
  parallel loop: Numba's parallel pipeline; the register-tiled products of
  ``_small_gemm``) paired with a fallback that computes the *same bits* and
  compiles in a fraction of the time (the serial loop; the plain
  fused-multiply-add products). On a call whose argument types the fast
  kernel has not compiled, and cannot load from the disk cache, the
  fallback runs and the fast kernel is compiled by one background thread,
  once the calling thread has stopped compiling for a moment; later calls
  run it. A warm cache, or ``FASTNN_NUMBA_BACKGROUND=0``, gives the fast
  kernel at once (compiled in the calling thread if need be). The
  background compilation of a kernel starts on its third call in a row
  with nothing compiled since the one before (the caller loops over code
  that is all compiled: a later training step, not the second and third
  layers of the first one, whose compilations would wait for it). Only
  kernels
  whose two versions give bit-identical results are deferred, so when the
  switch happens changes the speed, never the numbers.

Thresholds stay with the modules that use them: ``PARALLEL_MIN_ELEMENTS``
and ``PARALLEL_MIN_ELEMENTS_CHEAP`` in :mod:`fastnn._config`, the others at
the top of ``conv``, ``rnn``, ``_gemm`` and ``_small_gemm``. Every kernel
made here is listed in :data:`KERNELS`, and every (serial, parallel) pair in
:data:`PAIRS`, which ``fastnn warmup`` (:mod:`._warmup`) uses to compile the
parallel twin of every serial signature.
"""

import atexit
import collections
import contextlib
import hashlib
import os
import sys
import threading
import time
import types as _pytypes
import warnings

import numba
import numpy as np
from numba import njit, types
from numba.core import event as _event
from numba.core.caching import FunctionCache
from numba.core.compiler_lock import global_compiler_lock
from numba.core.dispatcher import Dispatcher, OmittedArg
from numba.core.registry import CPUDispatcher
from numba.core.serialize import dumps as _dumps

from ... import _config

__all__ = [
    "jit",
    "jit_inline",
    "kernel",
    "variants",
    "renamed",
    "rebinder",
    "Deferred",
    "threads",
    "settle",
    "background",
    "foreground",
    "KERNELS",
    "PAIRS",
    "DEFERRED",
]

#: Every kernel made by :func:`kernel` and :func:`variants`, in definition order.
KERNELS: list = []
#: (serial, parallel) dispatcher pairs made by :func:`variants`.
PAIRS: list = []
#: Every :class:`Deferred`, for ``fastnn warmup`` and the fork handler.
DEFERRED: list = []

_per_thread = threading.local()


def threads() -> int:
    """Threads for a parallel kernel called now (``fastnn._config.active_threads``).

    Numba keeps its thread count per calling thread: it is set here, in the
    thread that runs the kernel, whenever the count in use changed since that
    thread's last parallel call (the team shrinks while other programs keep
    the cores busy, see ``fastnn._contention``).
    """
    n = _config.active_threads()
    if n > 1 and getattr(_per_thread, "n", 0) != n:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        _per_thread.n = n
    return n


#: Seconds without a compilation in a calling thread before the background thread starts one: the
#: compilations of a first training step come one after another, and each would wait for a
#: background job holding Numba's (process-wide) compiler lock.
QUIET_S = 0.5
#: Calls in a row, each with nothing compiled since the one before, after which a deferred kernel's
#: fast version is compiled: 1 would start it at the second of two pooling layers of a first step.
_REPEATS = 2


_foreground = [0]


def background() -> bool:
    """Whether slow compilations may run in the background (``FASTNN_NUMBA_BACKGROUND``, default on)."""
    return not _foreground[0] and _config.env_switch("FASTNN_NUMBA_BACKGROUND")


@contextlib.contextmanager
def foreground():
    """Inside the block, every kernel compiles in the calling thread, fast version first (``fastnn warmup``)."""
    _foreground[0] += 1
    try:
        yield
    finally:
        _foreground[0] -= 1


def _options() -> dict:
    # read at decoration time: the package turns the cache off before any kernel module loads
    return dict(_config.NUMBA_JIT_OPTIONS)


def jit(fn):
    """``@njit`` with fastnn's options (compiled per argument types at the first call)."""
    return njit(**_options())(fn)


def jit_inline(fn):
    """``@njit(inline="always")``: inlined into the calling kernel by Numba itself."""
    return njit(inline="always", **_options())(fn)


# Compilations outside the background thread (any dispatcher's, nested ones included), from Numba's
# compile events: depth, running now; last, when one ended; count, how many ended.
_sync = {"depth": 0, "last": 0.0, "count": 0}


class _CompileWatch(_event.Listener):
    def on_start(self, event):
        if threading.current_thread() is not _worker["thread"]:
            _sync["depth"] += 1

    def on_end(self, event):
        if threading.current_thread() is not _worker["thread"]:
            _sync["depth"] -= 1
            _sync["count"] += 1
            _sync["last"] = time.monotonic()


_event.register("numba:compile", _CompileWatch())


def _stable(value, depth=0):
    """A stand-in for a closure cell's value that pickles to the same bytes in every process.

    A dispatcher pickles with a per-process id, so Numba's own cache key for
    a closure over a kernel (``_small_gemm``'s products captured by the conv
    and rnn kernels) changed in every process: the kernel was never loaded
    from the disk cache, compiled again in every process, and its fallback
    ran meanwhile. A dispatcher stands here for its function's module, name,
    bytecode and (recursively) closure.
    """
    if isinstance(value, Dispatcher) and depth < 8:
        fn = value.py_func
        cells = tuple(_stable(c.cell_contents, depth + 1) for c in (fn.__closure__ or ()))
        return ("dispatcher", fn.__module__, fn.__qualname__, hashlib.sha256(fn.__code__.co_code).hexdigest(), cells)
    if isinstance(value, tuple):
        return tuple(_stable(v, depth + 1) for v in value)
    return value


class _Cache(FunctionCache):
    """Numba's disk cache, with an index key for closures over kernels that is the same in every process."""

    def _index_key(self, sig, codegen):
        fn = self._py_func
        if fn.__closure__ is None:
            return super()._index_key(sig, codegen)
        cells = tuple(_stable(c.cell_contents) for c in fn.__closure__)
        return (
            sig,
            codegen.magic_tuple(),
            (hashlib.sha256(fn.__code__.co_code).hexdigest(), hashlib.sha256(_dumps(cells)).hexdigest()),
        )


class _Kernel(CPUDispatcher):
    """A dispatcher that types its declared input arrays read-only when it compiles."""

    _readonly = frozenset()

    def enable_caching(self):
        self._cache = _Cache(self.py_func)

    def _as_read_only(self, types_):
        return tuple(
            t.copy(readonly=True) if i in self._readonly and isinstance(t, types.Array) and t.mutable else t
            for i, t in enumerate(types_)
        )

    def signature_for(self, args):
        """(actual argument types, the signature this kernel compiles for them)."""
        actual = tuple(self.typeof_pyval(a) for a in args)
        return actual, self._as_read_only(actual)

    def get_call_template(self, args, kws):
        # A call from another compiled function (the training plan calls the activation kernels)
        # types its inputs read-only as well: a writeable array converts to the read-only type
        # safely, so the caller links the compilation Python calls already run instead of a second.
        if self._readonly and not kws:
            args = self._as_read_only(args)
        return super().get_call_template(args, kws)

    def load_cached(self, sig) -> bool:
        """Load the machine code for ``sig`` from the disk cache, compiling nothing; True if it is there."""
        with global_compiler_lock:
            if tuple(sig) in self.overloads:
                return True
            cres = self._cache.load_overload(sig, self.targetctx)
            if cres is None:
                return False
            self._cache_hits[sig] += 1
            self.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
            self.add_overload(cres)
            return True

    def _compile_for_args(self, *args, **kws):
        if not self._readonly or kws or any(isinstance(a, OmittedArg) for a in args):
            return super()._compile_for_args(*args, **kws)
        with global_compiler_lock:
            actual, sig = self.signature_for(args)
            if sig == actual:
                return super()._compile_for_args(*args)
            entry = self.compile(sig)
            # the writeable typing runs the same machine code (unboxing ignores the flag): register
            # it as an exact match, so the next call does not even need a conversion
            self._insert([t._code for t in actual], entry, False)
            return entry


def _make(fn, inputs, parallel, inline=False, ordered_sums=False):
    code = fn.__code__
    names = code.co_varnames[: code.co_argcount]
    inputs = inputs.split() if isinstance(inputs, str) else list(inputs)
    unknown = [n for n in inputs if n not in names]
    if unknown:
        raise TypeError(f"{fn.__qualname__} has no parameter(s) {unknown}")
    opts = _options()
    cache = opts.pop("cache", False)
    if ordered_sums:  # sums in the source's order: no reassociation for the vectoriser to choose
        opts["fastmath"] = set(opts["fastmath"]) - {"reassoc"}
    if inline:
        opts["inline"] = "always"
    disp = _Kernel(py_func=fn, locals={}, targetoptions=dict(opts, nopython=True, parallel=parallel))
    if cache:
        disp.enable_caching()
    disp._readonly = frozenset(names.index(n) for n in inputs)
    KERNELS.append(disp)
    return disp


def kernel(fn=None, *, inputs=(), parallel=False, inline=False):
    """Decorator: an entry point compiled on first call, ``inputs`` (parameter names) typed read-only.

    ``inline``: compiled code that calls it takes its body in (Numba's
    ``inline="always"``) instead of linking a compilation of its own, while a
    call from Python still compiles it like any kernel.
    """
    if fn is None:
        return lambda f: _make(f, inputs, parallel, inline)
    return _make(fn, inputs, parallel, inline)


def renamed(fn, suffix, name=None, replace=None):
    """A copy of ``fn`` named ``<name><suffix>`` (``name``: fn's own), for a second compilation of one source.

    Numba's disk cache keys a file on the function's qualified name and
    line, not on its compile options or closure values, so two compilations
    of one function (parallel and serial, or closures over different
    constants) need distinct names or they load each other's machine code.
    A kernel made by a factory takes the ``name`` of the module attribute
    that holds it, which :func:`variants` rebinds once the parallel twin is
    compiled.

    ``replace``: {global name: value} the copy sees instead of its module's
    (a snapshot of the module's globals, so names bound later are not seen).
    A driver made so with one helper swapped for another compiles only the
    one it calls: Numba types (and compiles) every function a body names,
    on the branches a run never takes too.
    """
    base = fn.__name__ if name is None else name
    env = fn.__globals__ if replace is None else dict(fn.__globals__, **replace)
    new = _pytypes.FunctionType(fn.__code__, env, base + suffix, fn.__defaults__, fn.__closure__)
    new.__qualname__ = (fn.__qualname__ if name is None else name) + suffix
    new.__doc__ = fn.__doc__
    return new


def rebinder(module_name, name, value_for):
    """A function that rebinds ``module.name`` to ``value_for(fast)`` (drops a Deferred from the call path)."""

    def install(fast):
        setattr(sys.modules[module_name], name, value_for(fast))

    return install


def variants(fn=None, *, inputs=(), exact=True, ordered_sums=False):
    """``(serial, parallel)`` kernels compiled from one function (see the module notes); a decorator.

    ``exact``: the two give bit-identical results (no reduction across
    iterations), so the parallel one may be compiled in the background
    while the serial one runs (:class:`Deferred`). Kernels that sum over
    the loop in parallel (the losses) pass False and compile it at once.

    ``ordered_sums``: compile both without fastmath's reassociation. A sum
    inside an iteration (a softmax row's) may otherwise be vectorised in
    one compilation and not alike in the other (seen on AVX-512: the
    parallel softmax differed from the serial one in the last bit of 12 %
    of its values), and an ``exact`` pair would change its results when the
    parallel twin replaces the fallback. It reaches the kernel's own body
    and the helpers Numba inlines into it (:func:`jit_inline`), not a
    :func:`jit` helper: that one is compiled once, with fastnn's options,
    and both twins call its machine code (the normalisation statistics).
    """
    if fn is None:
        return lambda f: variants(f, inputs=inputs, exact=exact, ordered_sums=ordered_sums)
    serial = _make(fn, inputs, False, ordered_sums=ordered_sums)
    par = _make(renamed(fn, "_parallel"), inputs, True, ordered_sums=ordered_sums)
    PAIRS.append((serial, par))
    if not exact:
        return serial, par
    install = rebinder(fn.__module__, fn.__name__, lambda fast: (serial, fast))
    return serial, Deferred(par, serial, install)


def _key(args):
    # what makes Numba compile a new specialisation, read cheaply (read-only inputs share one)
    return tuple((a.dtype.num, a.ndim, a.flags.c_contiguous) if type(a) is np.ndarray else type(a) for a in args)


class Deferred:
    """Call ``fallback`` until ``fast`` is compiled for the arguments' types; ``fast`` compiles in the background.

    Parameters
    ----------
    fast, fallback : _Kernel
        Two compilations that give bit-identical results for the same arguments.
    install : callable, optional
        Called with ``fast`` once it is ready for every argument typing seen
        so far, to put it in this object's place (callers then call it directly).
    """

    def __init__(self, fast, fallback, install=None):
        self.fast = fast
        self.fallback = fallback
        self._install = install
        self._state = {}  # _key(args) -> True ready, False being compiled (or failed)
        self._seen = {}  # _key(args) -> (_sync["count"] after the last fallback call, calls in a row so)
        DEFERRED.append(self)

    def __call__(self, *args):
        key = _key(args)
        state = self._state.get(key)
        if state:
            return self.fast(*args)
        streak = 0
        if state is None:
            if self._first(key, args):
                return self.fast(*args)
        else:
            count, streak = self._seen.get(key, (-1, 0))
            streak = streak + 1 if count == _sync["count"] else 0
            if streak >= _REPEATS:
                _start_job(self, key)  # the caller loops over compiled code: the fast kernel pays off
        out = self.fallback(*args)
        self._seen[key] = (_sync["count"], streak)
        return out

    def _first(self, key, args):
        """Decide for a new argument typing: True if ``fast`` can run it now."""
        _, sig = self.fast.signature_for(args)
        if self.fast.load_cached(sig):
            self._ready(key)
            return True
        if not background():
            return True  # the fast kernel compiles in this call, like any kernel
        self._state[key] = False
        _submit(self, key, sig)
        return False

    def _ready(self, key):
        self._state[key] = True
        if self._install is not None and all(self._state.values()):
            self._install(self.fast)

    def _build(self, key, sig):
        """Compile ``fast`` for ``sig`` (in the background thread)."""
        try:
            self.fast.compile(sig)
        except Exception as exc:  # the fallback stays in use: slower, same results
            warnings.warn(
                f"fastnn: compiling {self.fast.py_func.__qualname__} failed ({type(exc).__name__}: "
                f"{exc}); its slower version stays in use",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        self._ready(key)

    def _forget_pending(self):
        for key, state in list(self._state.items()):
            if not state:
                del self._state[key]


# -- the background thread -----------------------------------------------------------------------

# A job waits until its kernel is called again with nothing compiled in between: a first training
# step (or a one-off call) then finishes on the fallbacks, with no background compilation holding
# Numba's process-wide compiler lock while it compiles the rest (a kernel that two layers of the
# step call does not count as repeated), and a process that never repeats a call (one prediction,
# a short script) compiles nothing it does not use.
_cv = threading.Condition()
_waiting: dict = {}  # (id(deferred), key) -> job, not yet called again
_jobs: collections.deque = collections.deque()  # jobs to run, in the order their kernels were called again
_worker = {"thread": None, "busy": False, "stopping": False}


def _submit(deferred, key, sig):
    with _cv:
        _waiting[(id(deferred), key)] = (deferred, key, sig)


def _start_job(deferred, key):
    with _cv:
        job = _waiting.pop((id(deferred), key), None)
        if job is None or _worker["stopping"]:
            return
        _jobs.append(job)
        if _worker["thread"] is None:
            t = threading.Thread(target=_run, name="fastnn-numba-compile", daemon=True)
            _worker["thread"] = t
            t.start()
        _cv.notify_all()


def _wait_quiet():
    while _sync["depth"] > 0 or time.monotonic() - _sync["last"] < QUIET_S:
        time.sleep(QUIET_S / 5)


def _run():
    while True:
        with _cv:
            while not _jobs and not _worker["stopping"]:
                _cv.wait()
            if _worker["stopping"]:
                return
            job = _jobs.popleft()
            _worker["busy"] = True
        try:
            _wait_quiet()
            if not _worker["stopping"]:
                job[0]._build(job[1], job[2])
        finally:
            with _cv:
                _worker["busy"] = False
                _cv.notify_all()


def settle(timeout=None) -> bool:
    """Compile every deferred kernel called so far, in the background thread, and wait for it.

    Returns True when all are done, False if ``timeout`` seconds passed first.
    Benchmarks call this before they time a step that has run once.
    """
    end = None if timeout is None else time.monotonic() + timeout
    with _cv:  # (a reentrant lock: _start_job takes it again)
        for deferred, key, _ in list(_waiting.values()):
            _start_job(deferred, key)
        while _jobs or _worker["busy"]:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            _cv.wait(left)
    return True


def _stop_at_exit():
    # a compilation cut off at interpreter exit could leave LLVM running while the process tears
    # down: let the current one finish (a few seconds at most), start no other
    with _cv:
        _worker["stopping"] = True
        _jobs.clear()
        _waiting.clear()
        _cv.notify_all()
        while _worker["busy"]:
            _cv.wait()


def _before_fork():
    global_compiler_lock.acquire()  # waits for a background compilation: the child gets a free lock


def _after_fork_parent():
    global_compiler_lock.release()


def _after_fork_child():
    global_compiler_lock.release()
    _worker.update(thread=None, busy=False)
    _jobs.clear()
    _waiting.clear()
    for d in DEFERRED:  # compiled again (or loaded from the cache) on the child's next call
        d._forget_pending()


atexit.register(_stop_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)
