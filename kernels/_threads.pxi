# Included by every kernel module: its own copy of the thread count, set for
# all modules at once by the Cython backend (fastnn.set_num_threads).

cdef int _fastnn_num_threads = 1

# fastnn._config.MAX_THREADS_REQUEST: set_num_threads caps far below it; this
# stops a direct caller, since an OpenMP region of that many threads aborts.
cdef int _FASTNN_MAX_THREADS = 32768


def _set_num_threads(int n):
    """Set the number of OpenMP threads this module's parallel loops use."""
    global _fastnn_num_threads
    if n < 1 or n > _FASTNN_MAX_THREADS:
        raise ValueError(f"number of threads must be between 1 and {_FASTNN_MAX_THREADS}, got {n}")
    _fastnn_num_threads = n


def _get_num_threads():
    """The number of OpenMP threads this module's parallel loops use."""
    return _fastnn_num_threads
