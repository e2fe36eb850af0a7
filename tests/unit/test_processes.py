import ctypes
import platform
import sys

import pytest

from colorization.processes import retain_freed_memory


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)
def test_a_worker_keeps_the_memory_it_frees_on_glibc():
    assert retain_freed_memory() is True


def test_keeping_freed_memory_never_fails_where_it_cannot_be_set(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())  # a C library without mallopt
    assert retain_freed_memory() is False
