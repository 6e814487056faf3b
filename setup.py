"""Build the Cython kernels (kernels/*.pyx) into fastnn._ext.

Everything that pyproject.toml can say lives there; this file only does what
it cannot: find the extensions, and pick compiler flags.

* OpenMP is used when the compiler can build and link a test program with it;
  otherwise the kernels build serial (``prange`` becomes ``range``) and
  ``fastnn info`` reports ``openmp: False``.
* Flags are portable by default: ``-O3 -fno-math-errno -fno-trapping-math``.
  No ``-ffast-math``: in a shared library it can switch the whole process to
  flush-denormals-to-zero and it breaks NaN checks. Set
  ``FASTNN_NATIVE=1`` at install time to add ``-march=native`` (the wheel then
  runs only on CPUs like the build machine's).
* ``FASTNN_NO_OPENMP=1`` forces a serial build.
* The hot C loops are compiled as AVX-512 / AVX2+FMA / baseline clones picked
  at load time (GCC ``target_clones``); a compiler that cannot build them
  (checked with a test program) gets one baseline version.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
KERNELS = HERE / "kernels"


def _compiler_command():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def _has_openmp() -> bool:
    if os.environ.get("FASTNN_NO_OPENMP"):
        return False
    if sys.platform == "win32":  # MSVC: /openmp is always there
        return True
    source = "#include <omp.h>\nint main(void){int n=0;\n#pragma omp parallel\n{n=omp_get_num_threads();}\nreturn n<1;}\n"
    tmp = tempfile.mkdtemp()
    try:
        src = Path(tmp) / "omp_check.c"
        src.write_text(source)
        cmd = _compiler_command() + ["-fopenmp", str(src), "-o", str(Path(tmp) / "omp_check")]
        result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return result.returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _accepts_flag(flag: str) -> bool:
    """Whether the C compiler accepts ``flag`` (compiles a trivial file with it)."""
    tmp = tempfile.mkdtemp()
    try:
        src = Path(tmp) / "flag_check.c"
        src.write_text("int main(void){return 0;}\n")
        cmd = _compiler_command() + [flag, "-c", str(src), "-o", str(Path(tmp) / "flag_check.o")]
        result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return result.returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_CLONES_CHECK = """
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
static float twice(float x) { return 2 * x; }
int main(void) { return (int)twice(0.0f); }
"""


def _has_target_clones() -> bool:
    """Can the compiler build the kernels' per-ISA clones (GCC 12+ on x86-64)?"""
    tmp = tempfile.mkdtemp()
    try:
        src = Path(tmp) / "clones_check.c"
        src.write_text(_CLONES_CHECK)
        cmd = _compiler_command() + ["-O2", str(src), "-o", str(Path(tmp) / "clones_check")]
        result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return result.returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _flags(openmp: bool):
    if sys.platform == "win32":
        compile_args = ["/O2", "/fp:precise"] + (["/openmp"] if openmp else [])
        return compile_args, []
    compile_args = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fno-semantic-interposition"]
    link_args = []
    if os.environ.get("FASTNN_NATIVE"):
        compile_args.append("-march=native")
    elif sys.platform.startswith("linux") and not _has_target_clones():
        # the kernels' AVX-512 / AVX2 clones need GCC's target_clones with ISA levels
        compile_args.append("-DFASTNN_NO_CLONES")
    if openmp:
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    elif _accepts_flag("-fopenmp-simd"):
        # no threads, but keep the "omp simd" reductions in kernels/fastmath.h vectorised
        compile_args += ["-fopenmp-simd", "-DFASTNN_OPENMP_SIMD"]
    return compile_args, link_args


def extensions():
    openmp = _has_openmp()
    compile_args, link_args = _flags(openmp)
    print(f"fastnn: building Cython kernels with OpenMP={'yes' if openmp else 'no'}, flags {compile_args}")
    sources = sorted(KERNELS.glob("*.pyx"))
    if not sources:
        raise RuntimeError(f"no Cython kernel sources (*.pyx) in {KERNELS}: incomplete source tree")
    exts = []
    for pyx in sources:
        exts.append(
            Extension(
                f"fastnn._ext.{pyx.stem}",
                [str(pyx.relative_to(HERE))],
                include_dirs=[np.get_include(), str(KERNELS.relative_to(HERE))],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
                extra_compile_args=compile_args,
                extra_link_args=link_args,
            )
        )
    return cythonize(
        exts,
        compiler_directives={"language_level": "3"},
        include_path=[str(KERNELS)],
    )


setup(ext_modules=extensions())
