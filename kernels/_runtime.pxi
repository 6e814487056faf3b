# Build facts, instruction sets, tunables and the GEMM policy, as Python sees them.


#: The kernel families, in the order of fnn.h's FNN_FAMILY_*.
FAMILIES = ("elementwise", "gemm", "conv", "rnn")
#: The routes of fnn_gemm_route, in the order of FNN_ROUTE_*.
ROUTES = ("small", "packed", "blas")
_MODES = {"auto": FNN_GEMM_AUTO, "own": FNN_GEMM_OWN, "blas": FNN_GEMM_BLAS}


def has_openmp():
    """True when the extension was compiled with OpenMP."""
    return bool(FNN_HAS_OPENMP)


def omp_max_threads():
    """OpenMP's default team size (1 without OpenMP)."""
    return fnn_omp_max_threads()


def isa_names():
    """Names of the instruction-set levels, lowest first."""
    return tuple(fnn_isa_name(i).decode() for i in range(FNN_ISA_COUNT))


def best_isa():
    """The best instruction set this CPU and build support."""
    return fnn_isa_name(fnn_best_isa()).decode()


def _isa_level(name):
    if name == "generic":
        return FNN_ISA_SSE2
    names = isa_names()
    if name not in names:
        raise ValueError(f"unknown instruction set {name!r}; choose one of {', '.join(names)}, generic or auto")
    return names.index(name)


def select_isa(name, family=None):
    """Run `family` (every family when None) on instruction set `name` ("auto": the best).

    A level above what the CPU has is lowered to the best one. Returns the
    name now used (the lowest over the families when family is None).
    """
    cdef int fam = -1 if family is None else FAMILIES.index(family)
    cdef int level = -1 if name == "auto" else _isa_level(name)
    return fnn_isa_name(fnn_select_isa(fam, level)).decode()


def family_isa():
    """{family: the instruction set its calls go to now}."""
    return {name: fnn_isa_name(fnn_family_isa(i)).decode() for i, name in enumerate(FAMILIES)}


def tile_shape():
    """(rows, float32 lanes, float64 lanes) of the register tile of the GEMM in use."""
    return fnn_mm.mr, fnn_mm.lanes_f32, fnn_mm.lanes_f64


def tunable_names():
    """The fields of the compiled tunables, in fnn.h's order."""
    names = []
    cdef int i = 0
    while fnn_tune_name(i) != NULL:
        names.append(fnn_tune_name(i).decode())
        i += 1
    return names


def set_tunable(name, double value):
    """Set one compiled tunable (fastnn.backends.tuning pushes them all)."""
    if fnn_tune_set(name.encode(), value) != 0:
        raise KeyError(f"no compiled tunable {name!r}")


def get_tunable(name):
    """The value one compiled tunable has now."""
    cdef double v
    if fnn_tune_get(name.encode(), &v) != 0:
        raise KeyError(f"no compiled tunable {name!r}")
    return v


def set_gemm_mode(mode):
    """The policy's mode ("auto", "own" or "blas")."""
    fnn_tune.gemm_mode = _MODES[mode]


def gemm_route(fnn_idx m, fnn_idx n, fnn_idx k, dtype):
    """The route ("small", "packed" or "blas") the compiled code takes for C (m, n) = A (m, k) B (k, n).

    This is the decision the kernels themselves call, with the policy they
    hold now.
    """
    return ROUTES[fnn_gemm_route(m, n, k, np.dtype(dtype) == np.float64)]


def route_counts():
    """{route: products run on it so far} (what ran, for the tests)."""
    return {name: fnn_route_count(i) for i, name in enumerate(ROUTES)}
