"""Vectorisable elementary functions shared by the Numba kernels.

Numba compiles ``np.exp`` and ``np.tanh`` to calls into the C math library,
one element at a time: LLVM cannot turn those calls into SIMD instructions
(Numba vectorises them only when Intel's SVML is installed, which fastnn
does not require), and a sigmoid loop built on them runs about ten times
slower than NumPy's own vectorised ufuncs. The functions below are written
instead from operations LLVM *can* vectorise:

* ``exp(x) = 2**n · exp(r)`` with ``n = round(x / ln 2)`` and
  ``r = x − n·ln 2`` (Cody–Waite: ``ln 2`` split in a high part with trailing
  zero bits, so ``n·ln2_hi`` is exact, and a small correction), so that
  ``|r| <= ln(2)/2``;
* ``exp(r)`` by its Taylor polynomial in Horner form (degree 6 for float32,
  relative error ~1e-7; degree 12 for float64, ~2e-16), which is only
  multiply-adds;
* ``2**n`` built directly in the exponent bits of a float through an
  integer bit-cast (``_bits_as_float``, an LLVM ``bitcast``, free at run time).

Out-of-range arguments are handled with selects, not branches, so the loops
stay straight-line code: below the smallest normal result ``exp`` returns 0,
above the largest it returns ``inf``, and NaN comes back as NaN.

``tanh`` uses ``−expm1(−2|x|) / (2 + expm1(−2|x|))`` with the sign restored,
``expm1`` from the same reduction and polynomial, which stays accurate near 0
where ``1 − 2 / (exp(2|x|) + 1)`` would cancel. ``sigmoid`` is ``1 / (1 + exp(−x))``, which needs no special case:
``exp`` overflowing to ``inf`` gives exactly 0, and underflowing gives 1.

``row_max`` takes the maximum of a row through integer keys with the same
order as the floats, because a float max-reduction does not vectorise
without assuming that there are no NaNs.

The generic names (``fexp``, ``ftanh``, ``fsigmoid``, ``row_max``) pick the
float32 or float64 version at compile time from the argument type, so one
kernel source serves both dtypes and float32 work stays in float32 (twice
the SIMD lanes).

Measured accuracy (against float64 NumPy over [-30, 30] and tiny arguments):
float32 exp and sigmoid within 3.5e-7 relative error, tanh within 6e-7; float64 within
1.5e-15, so the float64 path needs no library call either.

Note for development: Numba's on-disk cache checks only the source file of
the function it caches, not of the functions it calls. After editing this
file, delete the ``*.nbi``/``*.nbc`` files under ``__pycache__`` of this
package, or kernels in the other modules keep their old copies of these
functions. (An installed package replaces every file at once and is not
affected.)
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ..._config import NUMBA_JIT_OPTIONS


@intrinsic
def _bits_as_float(typingctx, bits):
    """Reinterpret an int32 (int64) as the float32 (float64) with the same bits."""
    if bits == types.int32:
        sig, llty = types.float32(types.int32), ir.FloatType()
    elif bits == types.int64:
        sig, llty = types.float64(types.int64), ir.DoubleType()
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llty)

    return sig, codegen


@intrinsic
def _float_as_bits(typingctx, x):
    """Reinterpret a float32 (float64) as the int32 (int64) with the same bits."""
    if x == types.float32:
        sig, llty = types.int32(types.float32), ir.IntType(32)
    elif x == types.float64:
        sig, llty = types.int64(types.float64), ir.IntType(64)
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llty)

    return sig, codegen


# The dtype dispatchers below are inlined into their callers at the Numba IR
# level, so the loops they contain are compiled with the caller's options.
# Left as separate functions, the row-maximum loop lost its vectorisation
# (80 µs against 10 µs over 256 x 1000 float32).
_OVERLOAD_OPTIONS = {k: v for k, v in NUMBA_JIT_OPTIONS.items() if k != "cache"}


# float32: exp is computed for x in [LO, HI], the range where 2**n stays a
# normal number (n in [-126, 127]); outside it the result is 0 or inf.
_LOG2E_F = np.float32(1.4426950408889634)
_LN2HI_F = np.float32(0.693359375)  # 10 significant bits: n * _LN2HI_F is exact
_LN2LO_F = np.float32(-2.12194440e-4)
_LO_F = np.float32(-87.3)
_HI_F = np.float32(88.3)
_C_F = tuple(np.float32(1.0 / f) for f in (720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0))

# float64: the same with n in [-1022, 1023] and fdlibm's split of ln 2.
_LOG2E_D = 1.4426950408889634
_LN2HI_D = 6.93147180369123816490e-01
_LN2LO_D = 1.90821492927058770002e-10
_LO_D = -708.3
_HI_D = 709.0


@njit(inline="always", **NUMBA_JIT_OPTIONS)
def _reduce32(x):
    """(2**n, r, q) for float32 x within [_LO_F, _HI_F]: x = n·ln2 + r, exp(r) = 1 + r·q (Taylor, degree 6)."""
    n = np.floor(x * _LOG2E_F + np.float32(0.5))
    r = x - n * _LN2HI_F
    r = r - n * _LN2LO_F
    q = _C_F[0]
    q = q * r + _C_F[1]
    q = q * r + _C_F[2]
    q = q * r + _C_F[3]
    q = q * r + _C_F[4]
    q = q * r + _C_F[5]
    # np.int32() again: Numba widens int32 arithmetic to int64.
    return _bits_as_float(np.int32((np.int32(n) + np.int32(127)) << np.int32(23))), r, q


@njit(inline="always", **NUMBA_JIT_OPTIONS)
def _reduce64(x):
    """(2**n, r, q) for float64 x within [_LO_D, _HI_D]: x = n·ln2 + r, exp(r) = 1 + r·q (Taylor, degree 12)."""
    n = np.floor(x * _LOG2E_D + 0.5)
    r = x - n * _LN2HI_D
    r = r - n * _LN2LO_D
    q = 1.0 / 479001600.0
    q = q * r + 1.0 / 39916800.0
    q = q * r + 1.0 / 3628800.0
    q = q * r + 1.0 / 362880.0
    q = q * r + 1.0 / 40320.0
    q = q * r + 1.0 / 5040.0
    q = q * r + 1.0 / 720.0
    q = q * r + 1.0 / 120.0
    q = q * r + 1.0 / 24.0
    q = q * r + 1.0 / 6.0
    q = q * r + 0.5
    q = q * r + 1.0
    return _bits_as_float((np.int64(n) + np.int64(1023)) << np.int64(52)), r, q


# The exp cores are inlined into exp and sigmoid (straight-line code): compiled on their own they
# were one more compilation each, linked into every caller and optimised there again. exp, tanh
# and sigmoid themselves stay compiled once: inlined through the dtype dispatchers, their selects
# trip Numba's SSA check (NumbaIRAssumptionWarning) in the kernels that inline them.


@njit(inline="always", **NUMBA_JIT_OPTIONS)
def _exp_core32(x):
    """exp(x) for float32 x already within [_LO_F, _HI_F] (no checks)."""
    scale, r, q = _reduce32(x)
    return (q * r + _C_F[6]) * scale


@njit(inline="always", **NUMBA_JIT_OPTIONS)
def _exp_core64(x):
    """exp(x) for float64 x already within [_LO_D, _HI_D] (no checks)."""
    scale, r, q = _reduce64(x)
    return (q * r + 1.0) * scale


@njit(**NUMBA_JIT_OPTIONS)
def exp32(x):
    """exp(x) for float32, vectorisable (~3e-7 relative error)."""
    xc = x if x > _LO_F else _LO_F  # NaN -> _LO_F: keeps the int conversion defined
    xc = xc if xc < _HI_F else _HI_F
    res = _exp_core32(xc)
    res = np.float32(np.inf) if x > _HI_F else res
    res = np.float32(0.0) if x < _LO_F else res
    return x if x != x else res


@njit(**NUMBA_JIT_OPTIONS)
def exp64(x):
    """exp(x) for float64, vectorisable (~2e-15 relative error)."""
    xc = x if x > _LO_D else _LO_D
    xc = xc if xc < _HI_D else _HI_D
    res = _exp_core64(xc)
    res = np.inf if x > _HI_D else res
    res = 0.0 if x < _LO_D else res
    return x if x != x else res


@njit(**NUMBA_JIT_OPTIONS)
def sigmoid32(x):
    """1 / (1 + exp(-x)) for float32, vectorisable."""
    # exp of -|x| only, so it never overflows: sigmoid(x) = 1/(1+e) for
    # x >= 0 and e/(1+e) for x < 0, with e = exp(-|x|) in [0, 1].
    t = -np.abs(x)
    tc = t if t > _LO_F else _LO_F
    e = _exp_core32(tc)
    e = e if t > _LO_F else np.float32(0.0)
    num = np.float32(1.0) if x >= np.float32(0.0) else e
    y = num / (np.float32(1.0) + e)
    return y if x == x else x


@njit(**NUMBA_JIT_OPTIONS)
def sigmoid64(x):
    """1 / (1 + exp(-x)) for float64, vectorisable."""
    t = -np.abs(x)
    tc = t if t > _LO_D else _LO_D
    e = _exp_core64(tc)
    e = e if t > _LO_D else 0.0
    num = 1.0 if x >= 0.0 else e
    y = num / (1.0 + e)
    return y if x == x else x


# tanh through expm1: with t = -2|x| and em = expm1(t) = exp(t) - 1 in (-1, 0],
# tanh|x| = -em / (2 + em). expm1 comes from the same reduction as exp,
# t = n ln2 + r, as expm1(t) = 2^n expm1(r) + (2^n - 1), where the Taylor
# polynomial gives expm1(r) = r·q(r) to full relative accuracy even for tiny
# r, and for n = 0 (|x| < ln2/4) the second term is exactly 0. So one formula
# is accurate from the smallest |x| (tanh x = x) to saturation, with no
# separate small-argument branch: about a quarter fewer operations than
# 1 − 2/(exp(2|x|) + 1) plus a polynomial near 0, measured 10-15% faster.


@njit(**NUMBA_JIT_OPTIONS)
def tanh32(x):
    """tanh(x) for float32, vectorisable (~5e-7 relative error)."""
    t = np.float32(-2.0) * np.abs(x)
    t = t if t > _LO_F else _LO_F  # NaN -> _LO_F (the result is fixed up below)
    scale, r, q = _reduce32(t)
    em = scale * (q * r) + (scale - np.float32(1.0))
    y = np.copysign(-em / (np.float32(2.0) + em), x)  # copysign: one bit operation, no select
    return y if x == x else x


@njit(**NUMBA_JIT_OPTIONS)
def tanh64(x):
    """tanh(x) for float64, vectorisable (~1e-15 relative error)."""
    t = -2.0 * np.abs(x)
    t = t if t > _LO_D else _LO_D
    scale, r, q = _reduce64(t)
    em = scale * (q * r) + (scale - 1.0)
    y = np.copysign(-em / (2.0 + em), x)
    return y if x == x else x


# Maximum of a row. A float ``m = v if v > m else m`` reduction does not
# vectorise (LLVM may not reorder it without assuming there are no NaNs), so
# the floats are mapped to integers with the same order (flip the magnitude
# bits of negative numbers) and the maximum is taken over those: an integer
# max-reduction is plain SIMD code, ten times faster. A positive NaN becomes
# the maximum, a negative one is skipped; either way the NaN reaches the
# exponentials that follow and makes the row NaN, as in the reference.


@njit(inline="always", **NUMBA_JIT_OPTIONS)
def _row_max32(x):
    """max(x) of a non-empty 1-D float32 array."""
    # Keys in int64: Numba widens int32 arithmetic anyway, and this form
    # vectorised well where an int32 one did not (78 µs against 10 µs for 256 x 1000).
    rm_bits = np.int64(_float_as_bits(x[0]))
    rm_kmax = rm_bits ^ ((rm_bits >> 31) & 0x7FFFFFFF)
    for rm_j in range(x.size):
        rm_bits = np.int64(_float_as_bits(x[rm_j]))
        rm_key = rm_bits ^ ((rm_bits >> 31) & 0x7FFFFFFF)
        rm_kmax = rm_key if rm_key > rm_kmax else rm_kmax
    return _bits_as_float(np.int32(rm_kmax ^ ((rm_kmax >> 31) & 0x7FFFFFFF)))


@njit(inline="always", **NUMBA_JIT_OPTIONS)
def _row_max64(x):
    """max(x) of a non-empty 1-D float64 array."""
    rm_bits = _float_as_bits(x[0])
    rm_kmax = rm_bits ^ ((rm_bits >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))
    for rm_j in range(x.size):
        rm_bits = _float_as_bits(x[rm_j])
        rm_key = rm_bits ^ ((rm_bits >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))
        rm_kmax = rm_key if rm_key > rm_kmax else rm_kmax
    return _bits_as_float(np.int64(rm_kmax ^ ((rm_kmax >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))))


def _by_dtype(name, doc, f32, f64):
    """A function ``name(x)`` for compiled code that runs ``f32`` or ``f64``, chosen at compile time by x's (d)type.

    Arrays are dispatched on their dtype, scalars on their type. Called from
    Python the function raises: it only exists for Numba's typing.
    """

    def generic(x):
        raise NotImplementedError("only callable from Numba-compiled code")

    generic.__name__ = generic.__qualname__ = name
    generic.__doc__ = doc

    @overload(generic, jit_options=_OVERLOAD_OPTIONS, inline="always")
    def _select(x):
        t = getattr(x, "dtype", x)
        if t == types.float32:
            return lambda x: f32(x)
        if t == types.float64:
            return lambda x: f64(x)
        return None

    return generic


row_max = _by_dtype("row_max", "max(x) of a non-empty 1-D float array, vectorisable.", _row_max32, _row_max64)
fexp = _by_dtype("fexp", "exp(x), vectorisable; float32 or float64 chosen by the argument type.", exp32, exp64)
ftanh = _by_dtype("ftanh", "tanh(x), vectorisable; float32 or float64 chosen by the argument type.", tanh32, tanh64)
fsigmoid = _by_dtype(
    "fsigmoid", "1 / (1 + exp(-x)), vectorisable; float32 or float64 by the argument type.", sigmoid32, sigmoid64
)


@njit(inline="always", **NUMBA_JIT_OPTIONS)
def row_block(k, step, n):
    """(lo, hi): rows k·step up to k·step + step, within n, of a loop over row blocks.

    Conditional expressions instead of ``min``: its generic implementation
    is one more compilation in a process with an empty cache."""
    lo = k * step
    hi = lo + step
    return (lo if lo < n else n), (hi if hi < n else n)


@njit(inline="always", **NUMBA_JIT_OPTIONS)
def scaled_softmax(x, out, scale):
    """out = scale·softmax(x) for a non-empty 1-D row; returns (max(x), Σ exp(x − max)) for its log-sum-exp."""
    m = row_max(x)
    s = x.dtype.type(0)
    for j in range(x.size):
        e = fexp(x[j] - m)
        out[j] = e
        s += e
    inv = scale / s
    for j in range(x.size):
        out[j] *= inv
    return m, s
