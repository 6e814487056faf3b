# Included by every kernel module: its own copy of the thread count, set for
# all modules at once by the Cython backend (fastnn.set_num_threads).

cdef int _fastnn_num_threads = 1


def _set_num_threads(int n):
    """Set the number of OpenMP threads this module's parallel loops use."""
    global _fastnn_num_threads
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _fastnn_num_threads = n


def _get_num_threads():
    """The number of OpenMP threads this module's parallel loops use."""
    return _fastnn_num_threads
