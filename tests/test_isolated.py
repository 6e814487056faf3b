"""The crash harness itself: it must tell a crash, an exception and success apart."""

import pytest
from isolated import run_isolated


def test_segfault_is_reported_as_a_crash():
    result = run_isolated("import ctypes\nctypes.string_at(0)")
    assert result.crashed
    with pytest.raises(AssertionError, match="SIGSEGV"):
        result.assert_no_crash()


def test_exception_is_reported_with_its_class_hierarchy():
    result = run_isolated("""
        class Custom(ValueError):
            pass
        raise Custom("bad input")
    """)
    assert not result.crashed
    result.assert_raised(ValueError)
    with pytest.raises(AssertionError):
        result.assert_raised(TypeError)
    with pytest.raises(AssertionError):
        result.assert_ok()


def test_success_and_output():
    result = run_isolated("print('fine')").assert_ok()
    assert result.stdout.strip() == "fine"


def test_memory_limit_turns_a_huge_allocation_into_memory_error():
    run_isolated("bytearray(1 << 33)", memory_limit=1 << 30).assert_raised(MemoryError)


def test_timeout_is_a_crash():
    assert run_isolated("import time\ntime.sleep(30)", timeout=2).crashed
