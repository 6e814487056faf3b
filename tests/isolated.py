"""Run hostile cases in a child process, so that a crash fails one test.

A segfault, an abort in a C runtime or an out-of-memory kill inside the
pytest process would end the whole run and hide which case caused it. Every
adversarial test therefore runs its code through :func:`run_isolated`, which
starts a fresh interpreter (same ``sys.path`` and environment as the tests,
plus what the caller adds), optionally under a memory limit, and reports how
the child ended.

Typical use::

    result = run_isolated('''
        import numpy as np, fastnn
        fastnn.set_backend("cython")
        fastnn.ops.max_pool2d_forward(np.zeros((1, 1, 0, 0), np.float32), 2)
    ''')
    result.assert_raised(ValueError)
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap

#: Exit status the child uses to report "ended with a Python exception".
_EXC_STATUS = 3

_PRELUDE = """
import sys, traceback
def _fastnn_isolated_main():
{body}
try:
    _fastnn_isolated_main()
except BaseException as _exc:
    sys.stderr.write("ISOLATED-MRO " + ",".join(c.__module__ + "." + c.__qualname__
                                                for c in type(_exc).__mro__) + "\\n")
    sys.stderr.write("ISOLATED-EXCEPTION " + type(_exc).__module__ + "." + type(_exc).__qualname__ + "\\n")
    traceback.print_exc()
    sys.stderr.flush()
    sys.exit({status})
"""


@dataclasses.dataclass
class Isolated:
    """How a child process ended."""

    code: str
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def crashed(self) -> bool:
        """True when the child died of a signal (segfault, abort, kill)."""
        return self.timed_out or self.returncode < 0

    @property
    def exception(self) -> str | None:
        """Qualified name of the Python exception the child ended with, if any."""
        for line in self.stderr.splitlines():
            if line.startswith("ISOLATED-EXCEPTION "):
                return line.split(" ", 1)[1]
        return None

    def _describe(self) -> str:
        if self.timed_out:
            how = "timed out"
        elif self.returncode < 0:
            try:
                how = f"died of {signal.Signals(-self.returncode).name}"
            except ValueError:
                how = f"died of signal {-self.returncode}"
        else:
            how = f"exited with status {self.returncode}"
        return (
            f"child {how}\n--- code ---\n{self.code}\n--- stdout ---\n{self.stdout[-3000:]}\n"
            f"--- stderr ---\n{self.stderr[-5000:]}"
        )

    def assert_ok(self) -> Isolated:
        """The child finished normally (no crash, no exception)."""
        assert self.returncode == 0 and not self.timed_out, self._describe()
        return self

    def assert_no_crash(self) -> Isolated:
        """The child finished, normally or with a Python exception, but did not crash."""
        assert not self.crashed and self.returncode in (0, _EXC_STATUS), self._describe()
        return self

    def assert_raised(self, *exc_types: type) -> Isolated:
        """The child ended with a Python exception that is an instance of one of ``exc_types``.

        The check is by name along the exception's class hierarchy, reported
        by the child itself, so it works for exceptions the parent never
        imported.
        """
        assert not self.crashed, self._describe()
        assert self.returncode == _EXC_STATUS, "expected an exception\n" + self._describe()
        names = [line.split(" ", 1)[1] for line in self.stderr.splitlines() if line.startswith("ISOLATED-MRO ")]
        mro = names[0].split(",") if names else [self.exception or ""]
        wanted = {f"{t.__module__}.{t.__qualname__}" for t in exc_types}
        assert wanted & set(mro), f"expected one of {sorted(wanted)}, got {mro}\n" + self._describe()
        return self


def expect_value_error(call, failure: str, match: str = "") -> None:
    """For the child's code: ``call()`` must raise ``ValueError`` (saying ``match``), else ``AssertionError(failure)``."""
    try:
        call()
    except ValueError as exc:
        assert match in str(exc), exc
    else:
        raise AssertionError(failure)


def run_isolated(
    code: str,
    *,
    timeout: float = 120.0,
    env: dict | None = None,
    memory_limit: int | None = None,
    cpu_seconds: int | None = None,
) -> Isolated:
    """Run ``code`` (dedented) in a fresh Python process and report how it ended.

    Parameters
    ----------
    code : str
        Python statements; an exception they raise is reported, not printed raw.
    timeout : float
        Wall-clock seconds before the child is killed (reported as a crash).
    env : dict, optional
        Extra environment variables for the child.
    memory_limit : int, optional
        Address-space limit in bytes (``RLIMIT_AS``): an allocation beyond it
        fails with ``MemoryError`` in the child instead of swapping the machine.
    cpu_seconds : int, optional
        CPU-time limit (``RLIMIT_CPU``).
    """
    body = textwrap.indent(textwrap.dedent(code).strip() or "pass", "    ")
    script = _PRELUDE.format(body=body, status=_EXC_STATUS)
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    child_env.setdefault("PYTHONFAULTHANDLER", "1")
    if env:
        child_env.update(env)

    def limits():  # pragma: no cover - runs in the child
        import resource

        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
        if cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))

    preexec = limits if (memory_limit is not None or cpu_seconds is not None) and os.name == "posix" else None
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=child_env,
            timeout=timeout,
            preexec_fn=preexec,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return Isolated(textwrap.dedent(code), -9, out, err, timed_out=True)
    return Isolated(textwrap.dedent(code), proc.returncode, proc.stdout, proc.stderr)
