# The C-level API of shimpid's Cython backend, for Cython code that wants it without the GIL:
#
#     from shimpid._speedups cimport pid_record_t, writer_write_current, WriterCore
#
# Every function here is async-signal-safe unless its comment says otherwise: it calls only
# async-signal-safe system calls, allocates nothing and takes no lock, so it may run in a child
# between fork() and exec(). Failures come back as 0 / -errno (or as the documented codes).

from libc.stdint cimport uint32_t, uint64_t
from posix.types cimport mode_t


ctypedef struct pid_record_t:
    uint32_t pid
    bint has_start_time
    uint64_t start_time

# What a PidFileWriter prepared before any fork: NUL-terminated paths owned by the writer.
ctypedef struct pid_writer_t:
    const char *path
    const char *temp_prefix  # "<dir>/.<name>." ; the pid and a counter follow
    Py_ssize_t temp_prefix_len
    bint atomic
    bint exchange  # atomic writes replace by renameat2(RENAME_EXCHANGE) + unlink (not tmpfs)
    mode_t mode
    int pidfd_level  # what the kernel offered when the writer was made (_common.PIDFS, ...)
    bint pidfs  # record the process's pidfs inode on line 4
    const char *identity  # line 4 without its pidfs field: "shimpid boot=<uuid>" ("": no line 4)
    Py_ssize_t identity_len
    const char *capability  # line 3: boxlite's capability token ("": none), at most 64 bytes
    Py_ssize_t capability_len


# The record's bytes at buf (room for 48); returns their number.
cdef Py_ssize_t record_encode(const pid_record_t *record, char *buf) noexcept nogil

# Whether data is what writers write (<digits>\n[<digits>]\n, then only ASCII), and then the
# record in out, exactly as PidRecord.decode() would give it. Anything else (False) needs the
# general rules: PidRecord.decode(), with the GIL.
cdef bint record_decode_canonical(const unsigned char *data, Py_ssize_t size,
                                  pid_record_t *out) noexcept nogil

# This process's pid and start time (has_start_time is false where none can be read).
cdef void record_current(pid_record_t *out) noexcept nogil

# The state byte (field 3, 0 if absent) and start time (field 22) of a /proc/<pid>/stat line:
# 0 if the start time was found, -1 if not.
cdef int parse_stat(const char *buf, Py_ssize_t size, char *state,
                    uint64_t *start_time) noexcept nogil

# Write a record, or this process's record (with its pidfs inode), through a prepared writer:
# 0 or -errno.
cdef int writer_write(const pid_writer_t *writer, const pid_record_t *record) noexcept nogil
cdef int writer_write_current(const pid_writer_t *writer) noexcept nogil
# Write the record of process pid, read from outside it (a parent that has just spawned it): 0,
# -ESRCH if no process holds pid (or it is a thread, not a process), -EXDEV if /proc belongs to
# another pid namespace, or -errno.
cdef int writer_write_for(const pid_writer_t *writer, uint32_t pid) noexcept nogil


cdef class PidRecord:
    cdef pid_record_t rec
    cdef bint _ready  # set once: by __init__, when a record is made in C, or by a first hash
    cdef bint _initialising  # while __init__ converts its arguments


# Every shimpid.PidFileWriter is one (it is PidFileWriter's C part): (<WriterCore>w).writer.
cdef class WriterCore:
    cdef pid_writer_t writer  # writer.path is NULL until prepared: see _ready()
    cdef readonly object _path
    cdef readonly bytes _target  # the absolute path it writes
    cdef bytes _temp_prefix
    cdef readonly bytes _identity
    cdef readonly bytes _capability
    cdef int _ready(self) except -1
