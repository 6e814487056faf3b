"""The GEMM policy (fastnn.backends.gemm_policy): the switch, the rule, and what runs.

The Cython backend takes its decision in C for every product; these tests
ask that compiled decision (gemm_policy.route), check it against the rule as
documented (gemm_policy.decide, the Numba backend's version) and check that
the kernels ran on the route it named (the compiled code counts its routes).
"""

import subprocess
import sys

import numpy as np
import pytest
from conftest import cython_kernels
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import gemm as fgemm
from fastnn.backends import gemm_policy, tuning

_cython = cython_kernels


@pytest.fixture
def one_thread():
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(1)
    yield
    fastnn.set_num_threads(before)


def test_switch_modes():
    assert fgemm.get_gemm() == "auto" and fastnn.get_gemm() == "auto"
    try:
        fgemm.set_gemm("own")
        assert fgemm.get_gemm() == "own"
        assert fgemm.use_own("numba", np.float32, 4096, 4096, 4096)
        assert fgemm.use_own("numba", np.float32, 2, 2, 2)
        fgemm.set_gemm("BLAS")
        assert fgemm.get_gemm() == "blas"
        assert not fgemm.use_own("numba", np.float32, 64, 64, 64)
        with fastnn.use_gemm("own"):
            assert fgemm.get_gemm() == "own"
        assert fgemm.get_gemm() == "blas"
    finally:
        fgemm.set_gemm("auto")
    with pytest.raises(ValueError, match="unknown gemm mode"):
        fgemm.set_gemm("mkl")
    with pytest.raises(TypeError):
        fgemm.set_gemm(3)
    with pytest.raises(ValueError, match="no GEMM policy"):
        gemm_policy.params("numpy", np.float32)


def test_numba_auto_keeps_its_values(one_thread):
    """The Numba backend's decisions as it made them before the policy moved (values from the table)."""
    assert tuning.value("numba_gemm_own_min_flops") == 1 << 14
    assert tuning.value("numba_gemm_own_min_n") == 16
    for dt in (np.float32, np.float64):
        assert fgemm.use_own("numba", dt, 32, 32, 32)
        assert fgemm.use_own("numba", dt, 1024, 1024, 1024)
        assert not fgemm.use_own("numba", dt, 16, 16, 16)  # 4096 < 2^14 multiply-adds
        assert not fgemm.use_own("numba", dt, 128, 10, 128)  # a 10-class output: narrow
    fastnn.set_num_threads(2)
    assert fgemm.use_own("numba", np.float32, 128, 128, 128)  # 192^3 and below: own, even threaded
    assert fgemm.use_own("numba", np.float32, 192, 192, 192)
    assert not fgemm.use_own("numba", np.float32, 256, 256, 256)


def test_numba_decider_follows_changes(one_thread):
    use_own = gemm_policy.decider("numba")
    assert use_own(np.dtype(np.float32), 64, 64, 64)
    with fastnn.use_gemm("blas"):
        assert not use_own(np.dtype(np.float32), 64, 64, 64)
    with tuning.override(numba_gemm_own_max=32**3):
        assert not use_own(np.dtype(np.float64), 64, 64, 64)
        assert use_own(np.dtype(np.float64), 32, 32, 32)
    assert use_own(np.dtype(np.float64), 64, 64, 64)


def test_compiled_policy_holds_the_table_values():
    k = _cython()
    isa = k.family_isa()["gemm"]
    for name, v in tuning.resolve(isa).items():
        assert k.get_tunable(name) == pytest.approx(v), name
    assert set(k.tunable_names()) - {"gemm_mode"} == {t.name for t in tuning.TUNABLES if t.compiled}
    for mode, code in (("own", 1), ("blas", 2), ("auto", 0)):
        with fastnn.use_gemm(mode):
            assert k.get_tunable("gemm_mode") == code


_DIMS = st.integers(min_value=1, max_value=700)
_LIMITS = st.sampled_from([0, 1000, 8**3, 64**3, 192**3, 300**3, 1 << 40])


@settings(max_examples=300, deadline=None)
@given(
    m=_DIMS,
    n=_DIMS,
    k=_DIMS,
    f64=st.booleans(),
    mode=st.sampled_from(gemm_policy.GEMM_MODES),
    small=_LIMITS,
    packed=_LIMITS,
    min_n=st.sampled_from([0, 8, 16, 100]),
    own_min=_LIMITS,
)
def test_compiled_rule_is_the_documented_rule(m, n, k, f64, mode, small, packed, min_n, own_min):
    """fnn_gemm_route (C, what the Cython kernels run) == gemm_policy.decide (the rule) for any values."""
    _cython()
    dt = np.float64 if f64 else np.float32
    sfx = "f64" if f64 else "f32"
    with (
        fastnn.use_gemm(mode),
        tuning.override(
            **{
                f"gemm_small_max_{sfx}": small,
                f"gemm_packed_max_{sfx}": packed,
                "gemm_packed_min_n": min_n,
                "gemm_own_min_flops": own_min,
            }
        ),
    ):
        want = gemm_policy.decide(gemm_policy.params("cython", dt), m, n, k)
        assert gemm_policy.route("cython", dt, m, n, k) == want


def test_documented_rule_by_hand():
    p = dict(mode="auto", own_min_flops=100, small_max=64**3, packed_max=512**3, min_n=16, own_small_max=192**3)
    assert gemm_policy.decide(p, 4, 4, 4) == "blas"  # below own_min_flops
    assert gemm_policy.decide(p, 64, 64, 64) == "small"  # at small_max
    assert gemm_policy.decide(p, 64, 64, 65) == "packed"
    assert gemm_policy.decide(p, 1000, 10, 1000) == "blas"  # narrow: n < min_n
    assert gemm_policy.decide(p, 512, 512, 513) == "blas"  # above packed_max
    assert gemm_policy.decide(dict(p, mode="own"), 4, 4, 4) == "small"
    assert gemm_policy.decide(dict(p, mode="own"), 193, 192, 192) == "packed"
    assert gemm_policy.decide(dict(p, mode="blas"), 64, 64, 64) == "blas"


@pytest.mark.parametrize("mode", ["auto", "own", "blas"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_kernels_run_on_the_route_the_policy_names(mode, dtype, rng, one_thread):
    """Each product of matmul / dense ran where gemm_policy.route said (counted by the compiled code)."""
    k = _cython()
    from fastnn import ops

    shapes = [(8, 8, 8), (32, 64, 128), (64, 100, 64), (128, 784, 256), (300, 10, 400)]
    with (
        fastnn.use_backend("cython"),
        fastnn.use_gemm(mode),
        tuning.override(
            gemm_small_max_f32=64**3, gemm_small_max_f64=64**3, gemm_packed_max_f32=256**3, gemm_packed_max_f64=256**3
        ),
    ):
        for m, kk, n in shapes:
            a = rng.standard_normal((m, kk)).astype(dtype)
            w = rng.standard_normal((n, kk)).astype(dtype)
            before = k.route_counts()
            y = ops.dense_forward(a, w, None, "relu")
            after = k.route_counts()
            expected = gemm_policy.route("cython", dtype, m, n, kk)
            ran = [r for r in after if after[r] != before[r]]
            assert ran == [expected], (m, kk, n, mode, ran, expected)
            np.testing.assert_allclose(
                y, np.maximum(a.astype(np.float64) @ w.T, 0), rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-3
            )
        if mode == "auto":
            names = {gemm_policy.route("cython", dtype, m, n, kk) for m, kk, n in shapes}
            assert names == {"small", "packed", "blas"}


def test_policy_follows_the_instruction_set():
    """The thresholds are per instruction set: selecting another GEMM ISA changes the compiled decision."""
    k = _cython()
    from fastnn.backends import cython_backend

    m = n = kk = 100  # between sse2's small-kernel limit and avx512's
    try:
        for isa in k.isa_names():
            used = cython_backend.select_isa(isa, "gemm")
            small = tuning.value("gemm_small_max_f32", used)
            assert k.get_tunable("gemm_small_max_f32") == small
            assert (gemm_policy.route("cython", np.float32, m, n, kk) == "small") == (m * n * kk <= small)
    finally:
        cython_backend.select_isa("auto")


def test_fastnn_gemm_keeps_its_public_names():
    for name in (
        "set_gemm",
        "get_gemm",
        "use_gemm",
        "use_own",
        "route",
        "gflops_table",
        "measure_crossover",
        "blas_info",
    ):
        assert callable(getattr(fgemm, name)), name
    code = (
        "import fastnn, numpy as np\n"
        "assert fastnn.gemm.route('numba', np.float32, 64, 64, 64) == 'packed'\n"
        "assert 'numba' not in __import__('sys').modules\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
