"""Build the compiled kernels into one extension module, fastnn._ext._kernels.

Everything that pyproject.toml can say lives there; this file only does what
it cannot: compile the C kernel library once per instruction set, and pick
compiler flags. Layout of kernels/: kernels/README.md.

* The C library (kernels/lib/*.c) is compiled once: the kernels once per
  instruction set (isa_avx512.c, isa_avx2.c, isa_sse2.c, each with its own
  flags; the run time picks one at load, FASTNN_ISA can force a lower one),
  plus the run time. Those objects and the Cython glue (kernels/_kernels.pyx)
  are compiled in parallel, one job per CPU, and linked into the one module.
* OpenMP is used when the compiler can build and link a test program with it;
  otherwise the kernels build serial (``prange`` becomes ``range``) and
  ``fastnn info`` reports ``openmp: False``. ``FASTNN_NO_OPENMP=1`` forces a
  serial build.
* Flags are portable by default: ``-O3 -fno-math-errno -fno-trapping-math``.
  No ``-ffast-math``: in a shared library it can switch the whole process to
  flush-denormals-to-zero and it breaks NaN checks. ``FASTNN_NATIVE=1`` adds
  ``-march=native`` to the glue and the run time and tunes the kernels for
  the build machine (the result then runs only on CPUs like it).
* An instruction set the compiler cannot build (checked with a test program)
  is left out; on other architectures than x86-64 only the baseline kernels
  are built.
* The extension is optional: when it cannot be compiled (no C compiler, a
  failing build), the package installs without it, one line says why, and
  the reason is kept next to the package (fastnn/_ext/BUILD_SKIPPED.txt) for
  ``fastnn info``; the numpy and numba backends need no compiler.
  ``FASTNN_REQUIRE_EXT=1`` makes a failed build an error (CI, packagers).
* Objects are built in a directory per configuration (flags, OpenMP,
  instruction sets), so changing FASTNN_NO_OPENMP or FASTNN_NATIVE rebuilds
  instead of reusing objects compiled with other flags.
* The linked module carries no debug symbols (``-s`` on Linux).
"""

import copy
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

HERE = Path(__file__).resolve().parent
KERNELS = HERE / "kernels"
LIB = KERNELS / "lib"

# Flags per instruction set, best first; the first that compiles the check wins.
ISA_FLAGS = {
    "avx512": [["-march=x86-64-v4"], ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw", "-mavx2", "-mfma"]],
    "avx2": [["-march=x86-64-v3"], ["-mavx2", "-mfma"]],
}
_ISA_CHECK = {
    "avx512": "#include <immintrin.h>\nint main(void){__m512 v=_mm512_setzero_ps();"
    "return (int)_mm512_reduce_add_ps(_mm512_maskz_loadu_ps(0, &v));}\n",
    "avx2": "#include <immintrin.h>\nint main(void){float f[8]={0};__m256 v=_mm256_loadu_ps(f);"
    "v=_mm256_fmadd_ps(v,v,v);_mm256_storeu_ps(f,v);return (int)f[0];}\n",
}


def _compiler_command():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def _compiles(source: str, flags, link: bool = False) -> bool:
    """Whether the C compiler builds ``source`` with ``flags``."""
    tmp = tempfile.mkdtemp()
    try:
        src = Path(tmp) / "check.c"
        src.write_text(source)
        out = Path(tmp) / ("check" if link else "check.o")
        cmd = _compiler_command() + list(flags) + ([] if link else ["-c"]) + [str(src), "-o", str(out)]
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _has_openmp() -> bool:
    if os.environ.get("FASTNN_NO_OPENMP"):
        return False
    source = (
        "#include <omp.h>\nint main(void){int n=0;\n#pragma omp parallel\n{n=omp_get_num_threads();}\nreturn n<1;}\n"
    )
    return _compiles(source, ["-fopenmp"], link=True)


def _isa_flags() -> dict:
    """{isa: flags} for the instruction sets this compiler can build here (the baseline always)."""
    isas = {}
    if platform.machine().lower() in ("x86_64", "amd64"):
        for isa, candidates in ISA_FLAGS.items():
            for flags in candidates:
                if _compiles(_ISA_CHECK[isa], flags):
                    isas[isa] = flags
                    break
    isas["sse2"] = []
    return isas


def _flags(openmp: bool):
    compile_args = ["-O3", "-g0", "-fno-math-errno", "-fno-trapping-math", "-fno-semantic-interposition"]
    link_args = ["-s"] if sys.platform.startswith("linux") else []  # no symbol tables in the shipped module
    if openmp:
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    elif _compiles("int main(void){return 0;}\n", ["-fopenmp-simd"]):
        # no threads, but keep the "omp simd" reductions vectorised
        compile_args += ["-fopenmp-simd", "-DFNN_OPENMP_SIMD"]
    return compile_args, link_args


#: Written next to the package when the extension was not built; the cython backend reports it.
SKIPPED_MARKER = Path("fastnn") / "_ext" / "BUILD_SKIPPED.txt"


class BuildKernels(build_ext):
    """build_ext that compiles the C library and the glue in parallel, then links them once.

    A build that fails leaves the package without the extension unless
    FASTNN_REQUIRE_EXT is set.
    """

    def run(self):
        markers = [HERE / SKIPPED_MARKER, Path(self.build_lib) / SKIPPED_MARKER]
        try:
            super().run()
        except (CCompilerError, CompileError, ExecError, LinkError, PlatformError, OSError) as exc:
            if os.environ.get("FASTNN_REQUIRE_EXT", "").strip() not in ("", "0"):
                raise
            reason = " ".join(str(exc).split()) or type(exc).__name__
            print(
                f"fastnn: the cython backend is not built ({reason}); the numpy and numba backends work "
                f"without it (FASTNN_REQUIRE_EXT=1 makes this an error)",
                file=sys.stderr,
            )
            for marker in markers:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(f"not built at install: {reason}\n")
            return
        for marker in markers:
            if marker.exists():
                marker.unlink()

    def build_extension(self, ext):
        libs = getattr(ext, "fnn_library", None)
        if not libs:
            return super().build_extension(ext)
        # one object directory per configuration: other flags never reuse these objects
        config = repr((ext.extra_compile_args, ext.extra_link_args, ext.define_macros, libs)).encode()
        build_temp = os.path.join(self.build_temp, "cfg-" + hashlib.sha256(config).hexdigest()[:12])
        compile_args = ext.extra_compile_args
        include_dirs = ext.include_dirs + [sysconfig.get_paths()["include"]]
        macros = list(ext.define_macros)
        jobs = [(src, flags) for src, flags in libs]
        depends = [str(p) for p in KERNELS.glob("*.h")]
        workers = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)

        def compile_one(job):
            src, flags = job
            compiler = copy.copy(self.compiler)
            obj = compiler.object_filenames([src], output_dir=build_temp)[0]
            if (
                not self.force
                and Path(obj).exists()
                and all(Path(obj).stat().st_mtime >= Path(d).stat().st_mtime for d in [src] + depends)
            ):
                return obj
            return compiler.compile(
                [src],
                output_dir=build_temp,
                macros=macros,
                include_dirs=include_dirs,
                extra_postargs=compile_args + flags,
            )[0]

        with ThreadPoolExecutor(max_workers=workers) as pool:
            # the glue first: it is the longest job
            futures = [pool.submit(compile_one, (src, [])) for src in ext.sources]
            futures += [pool.submit(compile_one, job) for job in jobs]
            objects = [f.result() for f in futures]
        # always link: the module may come from another configuration even when these objects are older
        ext_path = self.get_ext_fullpath(ext.name)
        if os.path.exists(ext_path):
            os.remove(ext_path)
        self.compiler.link_shared_object(
            objects,
            ext_path,
            libraries=self.get_libraries(ext),
            library_dirs=ext.library_dirs,
            runtime_library_dirs=ext.runtime_library_dirs,
            extra_postargs=ext.extra_link_args,
            export_symbols=self.get_export_symbols(ext),
            build_temp=build_temp,
            target_lang="c",
        )


def extensions():
    openmp = _has_openmp()
    compile_args, link_args = _flags(openmp)
    isas = _isa_flags()
    native = bool(os.environ.get("FASTNN_NATIVE"))
    glue_args = compile_args + (["-march=native"] if native else [])
    tune = ["-mtune=native"] if native else []
    library = [(str((LIB / f"isa_{isa}.c").relative_to(HERE)), flags + tune) for isa, flags in isas.items()]
    missing = [f"-DFNN_NO_{isa.upper()}" for isa in ISA_FLAGS if isa not in isas]
    library.append((str((LIB / "runtime.c").relative_to(HERE)), (["-march=native"] if native else []) + missing))
    print(
        f"fastnn: building the kernels with OpenMP={'yes' if openmp else 'no'}, instruction sets "
        f"{', '.join(isas)}, flags {glue_args}"
    )
    pyx = KERNELS / "_kernels.pyx"
    if not pyx.exists():
        raise RuntimeError(f"no Cython kernel source {pyx}: incomplete source tree")
    ext = Extension(
        "fastnn._ext._kernels",
        [str(pyx.relative_to(HERE))],
        include_dirs=[np.get_include(), str(KERNELS.relative_to(HERE))],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=glue_args,
        extra_link_args=link_args,
        depends=[str(p.relative_to(HERE)) for p in sorted(KERNELS.glob("*.h")) + sorted(LIB.glob("*.c"))],
    )
    (ext,) = cythonize([ext], compiler_directives={"language_level": "3"}, include_path=[str(KERNELS)])
    ext.fnn_library = library
    return [ext]


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildKernels})
