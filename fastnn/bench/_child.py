"""Run a measurement in a new Python process and read back the one JSON line it prints."""

from __future__ import annotations

import json
import subprocess


def tagged_json(cmd: list[str], env: dict, tag: str, what: str, timeout: float) -> dict:
    """Run ``cmd`` and return the JSON of its stdout line ``"<tag> {...}"``.

    Raises
    ------
    RuntimeError
        When no such line came: with the end of the child's stderr (or stdout), naming ``what``.
    """
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    prefix = tag + " "
    for line in out.stdout.splitlines():
        if line.startswith(prefix):
            return json.loads(line[len(prefix) :])
    raise RuntimeError(f"{what} failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()[-600:]}")
