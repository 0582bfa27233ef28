# cython: language_level=3
# A tiny extension of the kind issue #4 promises: other Cython code that forks on its own and
# records the child through shimpid's C-level API, with no GIL and no Python in the child.
from posix.types cimport pid_t
from posix.unistd cimport _exit, fork

from shimpid._speedups cimport WriterCore, writer_write_current


def fork_and_write(WriterCore writer not None):
    """Fork; the child writes its own record without the GIL and exits with -rc. Not reaped."""
    cdef pid_t pid
    cdef int rc
    with nogil:
        pid = fork()
        if pid == 0:
            rc = writer_write_current(&writer.writer)
            _exit(-rc)
    if pid < 0:
        raise OSError("fork failed")
    return pid
