/* Platform helpers for shimpid/_speedups.pyx: system calls that libc or Cython's declarations
 * do not offer everywhere, each a thin async-signal-safe wrapper (no allocation, no lock), so
 * any of them may run in a child between fork() and exec(). */
#ifndef SHIMPID_SPEEDUPS_COMPAT_H
#define SHIMPID_SPEEDUPS_COMPAT_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__linux__)
#define SHIMPID_LINUX 1
#include <sys/syscall.h>
#include <sys/vfs.h>
#else
#define SHIMPID_LINUX 0
#endif

#if defined(__APPLE__)
#define SHIMPID_DARWIN 1
#include <libproc.h>
#include <sys/proc.h>
#include <sys/proc_info.h>
#else
#define SHIMPID_DARWIN 0
#endif

/* Whether a POSIX or OFD record lock (lockf, fcntl F_SETLK) is held on the open file, by any
   process, this one included: 1 (with the pid a POSIX lock names, else 0, in *pid), 0, or 0
   where this cannot be asked (the caller's flock() is then the lock it relies on).
   F_OFD_GETLK (Linux 3.15) takes nothing; F_GETLK elsewhere. */
static int shimpid_record_locked(int fd, int *pid) {
    struct flock probe;
    memset(&probe, 0, sizeof(probe));
    probe.l_type = F_WRLCK;
    probe.l_whence = SEEK_SET;
#if defined(F_OFD_GETLK)
    if (fcntl(fd, F_OFD_GETLK, &probe) != 0)
        return 0;
#else
    if (fcntl(fd, F_GETLK, &probe) != 0)
        return 0;
#endif
    *pid = probe.l_pid > 0 ? (int)probe.l_pid : 0;
    return probe.l_type != F_UNLCK;
}

/* readdir() tells the end of the directory from an error only by errno, set to 0 before. */
static void shimpid_clear_errno(void) { errno = 0; }

/* "00" "01" ... "99": decimal formatting two digits per division. */
static const char shimpid_digit_pairs[201] =
    "0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849"
    "5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";

/* Temporary names must differ between threads and successive writes of one process.
   A relaxed atomic increment is lock-free and async-signal-safe. */
static unsigned long long shimpid_temp_counter;
static unsigned long long shimpid_next_temp(void) {
    return __atomic_fetch_add(&shimpid_temp_counter, 1, __ATOMIC_RELAXED);
}

/* macOS: proc_pidinfo(PROC_PIDTBSDINFO), as the reference reads it. 0, ESRCH or an errno. */
static int shimpid_darwin_info(pid_t pid, char *state, uint64_t *start) {
#if SHIMPID_DARWIN
    struct proc_bsdinfo info;
    int size = (int)sizeof(info);
    errno = 0;
    if (proc_pidinfo(pid, PROC_PIDTBSDINFO, 0, &info, size) != size)
        return errno ? errno : ESRCH;
    *state = info.pbi_status == SZOMB ? 'Z' : 'R';
    *start = info.pbi_start_tvsec * 1000000ULL + info.pbi_start_tvusec;
    return 0;
#else
    (void)pid; (void)state; (void)start;
    return ENOSYS;
#endif
}

#if SHIMPID_LINUX

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* renameat2(RENAME_EXCHANGE) through syscall(): older C libraries have no wrapper. */
static int shimpid_rename_exchange(const char *a, const char *b) {
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
#else
    (void)a; (void)b;
    errno = ENOSYS;
    return -1;
#endif
}

/* The filesystem type (statfs's f_type) of a path or a descriptor; -1 and errno on failure. */
static long shimpid_fs_type(const char *path) {
    struct statfs fs;
    return statfs(path, &fs) == 0 ? (long)fs.f_type : -1;
}

static long shimpid_fd_fs_type(int fd) {
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 ? (long)fs.f_type : -1;
}

/* pidfd_open(pid, 0) (Linux 5.3+), through syscall(): C libraries before glibc 2.36 lack it. */
static int shimpid_pidfd_open(pid_t pid) {
#if defined(SYS_pidfd_open)
    return (int)syscall(SYS_pidfd_open, pid, 0);
#elif defined(__NR_pidfd_open)
    return (int)syscall(__NR_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

#else /* not Linux */

static int shimpid_rename_exchange(const char *a, const char *b) {
    (void)a; (void)b;
    errno = ENOSYS;
    return -1;
}
static long shimpid_fs_type(const char *path) { (void)path; errno = ENOSYS; return -1; }
static long shimpid_fd_fs_type(int fd) { (void)fd; errno = ENOSYS; return -1; }
static int shimpid_pidfd_open(pid_t pid) { (void)pid; errno = ENOSYS; return -1; }

#endif /* SHIMPID_LINUX */

#endif /* SHIMPID_SPEEDUPS_COMPAT_H */
