/*
 * The raw-syscall floor: the system calls shimpid makes for each operation, in C with no Python
 * around them. bench/conftest.py compiles this into a shared library and calls it through ctypes,
 * alternating short batches of an operation in Python and of its floor here, so that each ratio
 * is taken under the same machine conditions (a shared VM's speed drifts by half within seconds).
 *
 *   floor_prepare(DIR, PID)   where pid files go (tmpfs or disk), and the process they record:
 *                             the benchmarking Python process itself, whose /proc/<PID>/stat is
 *                             read as the library reads it (a large process's stat takes the
 *                             kernel longer to render than a small one's)
 *   floor_time(NAME, CALLS)   nanoseconds for CALLS calls of operation NAME (-1: no such one)
 *   floor_record(DIR, PID, SWAPS)  the record shimpid.spawn writes for child PID (see there)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static char pid_path[4096], temp_path[4200], temp_prefix[4096], lock_path[4096];
static char lock_temp_prefix[4096];
static char stat_path[64];
static char record[160];
static size_t record_len;
static volatile uint64_t sink;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static uint64_t parse_start(const char *buf, ssize_t n) {
    ssize_t i = n - 1, field = 0;
    while (i >= 0 && buf[i] != ')') i--;
    for (i++; i < n;) {
        while (i < n && buf[i] == ' ') i++;
        ssize_t start = i;
        while (i < n && buf[i] != ' ' && buf[i] != '\n') i++;
        if (start == i) return 0;
        if (++field == 20) {
            uint64_t v = 0;
            for (; start < i; start++) v = v * 10 + (uint64_t)(buf[start] - '0');
            return v;
        }
    }
    return 0;
}

static uint64_t read_stat(const char *path) {
    char buf[1024];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die(path);
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    return parse_start(buf, n);
}

/* The operations, each making the calls the library makes. */

static pid_t target;

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* The fingerprint of a process: its pidfs inode (Linux 6.9+). */
static uint64_t pidfs_inode(int pidfd) {
    struct stat st;
    if (fstat(pidfd, &st) != 0) die("fstat pidfd");
    return (uint64_t)st.st_ino;
}

static int exited(int pidfd) {
    struct pollfd p = {pidfd, POLLIN, 0};
    return poll(&p, 1, 0);
}

static void op_current(void) {
    sink += (uint64_t)getpid();
    sink += read_stat("/proc/self/stat");
}

/* process_start_time(): pin the process (and refuse a thread), read its stat. */
static void op_stat(void) {
    int fd = pidfd_open_(target);
    if (fd < 0) die("pidfd_open");
    sink += read_stat(stat_path);
    close(fd);
}

/* is_process_alive(): pin it, ask whether it has exited. */
static void op_alive(void) {
    int fd = pidfd_open_(target);
    if (fd < 0) die("pidfd_open");
    sink += (uint64_t)exited(fd);
    close(fd);
}

static void write_all(int fd) {
    if (write(fd, record, record_len) != (ssize_t)record_len) die("write");
}

/* In place: opened without O_TRUNC, checked (a regular file, ours), truncated, written. */
static void check_target(void);

static void op_write_in_place(void) {
    struct stat st;
    check_target(); /* as the writers: a FIFO or a device at the path is never opened */
    int fd = open(pid_path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd < 0) die("open");
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) die("fstat");
    if (ftruncate(fd, 0) != 0) die("ftruncate");
    write_all(fd);
    close(fd);
}

static void write_temp(void) {
    /* a new temporary name each time, as shimpid makes them: <pid>.<counter>; the pid read
       anew, since it changes across fork(). (On tmpfs a new name costs more than reusing one.) */
    static unsigned long long counter;
    snprintf(temp_path, sizeof temp_path, "%s%d.%llu.tmp", temp_prefix, (int)getpid(), counter++);
    int fd = open(temp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) die("open temp");
    write_all(fd);
    close(fd);
}

/* What is at the path is looked at first: only a regular file (or nothing) is replaced. */
static void check_target(void) {
    struct stat st;
    if (lstat(pid_path, &st) == 0 && !S_ISREG(st.st_mode)) die("not a regular file");
}

static void op_write_rename(void) {
    check_target();
    write_temp();
    if (rename(temp_path, pid_path) != 0) die("rename");
}

static void op_write_exchange(void) {
    check_target();
    write_temp();
    if (renameat2(AT_FDCWD, temp_path, AT_FDCWD, pid_path, RENAME_EXCHANGE) != 0)
        die("renameat2");
    if (unlink(temp_path) != 0) die("unlink");
}

/* PidFileLock: acquire() (a temporary file, written, its mode set, locked, linked to the
   path), then release() (still ours? read it back, remove it, close: the lock goes). */
static void op_lock(void) {
    static unsigned long long counter;
    char buf[161], temp[4200];
    struct stat st, now;
    /* a new temporary name each time, as shimpid makes them: <pid>.<counter> */
    snprintf(temp, sizeof temp, "%s%d.%llu.tmp", lock_temp_prefix, (int)getpid(), counter++);
    int fd = open(temp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) die("open temp");
    write_all(fd);
    if (fchmod(fd, 0644) != 0) die("fchmod"); /* the mode exactly, whatever the umask */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) die("flock");
    if (link(temp, lock_path) != 0) die("link");
    if (unlink(temp) != 0) die("unlink temp");
    if (fstat(fd, &st) != 0 || lstat(lock_path, &now) != 0 || st.st_ino != now.st_ino)
        die("not ours");
    if (pread(fd, buf, record_len + 1, 0) != (ssize_t)record_len) die("pread");
    if (unlink(lock_path) != 0) die("unlink");
    close(fd);
}

static uint64_t read_pid_file(void) {
    char buf[4097];
    struct stat st;
    int fd = open(pid_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) die("open pid file");
    if (fstat(fd, &st) != 0) die("fstat");
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    uint64_t pid = 0;
    for (ssize_t i = 0; i < n && buf[i] != '\n'; i++) pid = pid * 10 + (uint64_t)(buf[i] - '0');
    return pid;
}

static void op_read(void) { sink += read_pid_file(); }

/* process_identity() of a file with a pidfs fingerprint: no /proc at all. */
static void op_identity(void) {
    uint64_t pid = read_pid_file();
    int fd = pidfd_open_((pid_t)pid);
    if (fd < 0) die("pidfd_open");
    sink += pidfs_inode(fd) + (uint64_t)exited(fd);
    close(fd);
}

/* process_identity() of a file with a start time only (the reference's, or Linux < 6.9). */
static void op_identity_start_time(void) {
    uint64_t pid = read_pid_file();
    int fd = pidfd_open_((pid_t)pid);
    if (fd < 0) die("pidfd_open");
    sink += read_stat(stat_path);
    close(fd);
}

/* What process_identity() cost before pidfds: kill(pid, 0) and the stat read. */
static void op_identity_proc(void) {
    uint64_t pid = read_pid_file();
    if (kill((pid_t)pid, 0) != 0) die("kill");
    sink += read_stat(stat_path);
}

/* write_current(): this process's start time and pidfs inode, then an atomic write. */
static void op_write_current(void) {
    sink += (uint64_t)getpid();
    sink += read_stat("/proc/self/stat");
    int fd = pidfd_open_(getpid());
    if (fd < 0) die("pidfd_open");
    sink += pidfs_inode(fd);
    close(fd);
    op_write_rename();
}

/* write_for(pid): the same, read from outside the process. */
static void op_write_for(void) {
    int fd = pidfd_open_(target);
    if (fd < 0) die("pidfd_open");
    sink += pidfs_inode(fd);
    sink += read_stat(stat_path);
    close(fd);
    op_write_rename();
}

/* The record shimpid.spawn writes for a child, from the parent: floor_record(DIR, PID, SWAPS)
   pins the child for its pidfs inode, reads the clock (its start time once shimpid trusts the
   clock: /proc is not read, which shimpid still does for the few children the clock cannot
   place), looks at the path, and writes a temporary file and renames it over a new pid file in
   DIR; with SWAPS, first a stat() of DIR and geteuid(), as shimpid asks again for each file in a
   directory where its atomic writes may swap files (outside tmpfs). bench/test_spawning.py calls
   it right after Popen: the floor of spawn's rows, the record's system calls with no Python
   around them. The files stay until floor_record_sweep() (untimed), as FreshPaths' do there. */
static char record_dir[4096];
static unsigned long records; /* pid files made, named by a counter: floor-record-<pid>-<n>.pid */

int floor_record(const char *dir, int pid, int swaps) {
    char path[8200], temp[8300], text[160];
    struct stat st;
    struct timespec now;
    unsigned long n = __atomic_fetch_add(&records, 1, __ATOMIC_RELAXED);
    if (n == 0) snprintf(record_dir, sizeof record_dir, "%s", dir);
    if (swaps) {
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) die("stat directory");
        sink += (uint64_t)(st.st_uid == geteuid());
    }
    int fd = pidfd_open_((pid_t)pid);
    if (fd < 0) die("pidfd_open");
    uint64_t inode = pidfs_inode(fd);
    close(fd);
    clock_gettime(CLOCK_BOOTTIME, &now);
    int self = (int)getpid();
    snprintf(path, sizeof path, "%s/floor-record-%d-%lu.pid", dir, self, n);
    snprintf(temp, sizeof temp, "%s/.floor-record-%d-%lu.pid.%d.%lu.tmp", dir, self, n, self, n);
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) die("not a regular file");
    int len = snprintf(text, sizeof text,
                       "%d\n%llu\n\nshimpid boot=00000000-1111-2222-3333-444444444444"
                       " pidfs=%llu\n", pid,
                       (unsigned long long)now.tv_sec * 100 +
                           (unsigned long long)now.tv_nsec / 10000000,
                       (unsigned long long)inode);
    fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) die("open temp");
    if (write(fd, text, (size_t)len) != len) die("write");
    close(fd);
    if (rename(temp, path) != 0) die("rename");
    return 0;
}

void floor_record_sweep(void) {
    char path[8200];
    for (unsigned long n = 0; n < records; n++) {
        snprintf(path, sizeof path, "%s/floor-record-%d-%lu.pid", record_dir, (int)getpid(), n);
        unlink(path);
    }
    records = 0;
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static const struct {
    const char *name;
    void (*op)(void);
} operations[] = {
    {"current", op_current},
    {"process_start_time", op_stat},
    {"is_process_alive", op_alive},
    {"write_in_place", op_write_in_place},
    {"write_rename", op_write_rename},
    {"write_exchange", op_write_exchange},
    {"read", op_read},
    {"process_identity", op_identity},
    {"process_identity_start_time", op_identity_start_time},
    {"process_identity_proc", op_identity_proc},
    {"write_current", op_write_current},
    {"write_for", op_write_for},
    {"lock", op_lock},
};

int floor_prepare(const char *dir, int pid) {
    target = (pid_t)pid;
    snprintf(pid_path, sizeof pid_path, "%s/floor-%d.pid", dir, pid);
    snprintf(temp_prefix, sizeof temp_prefix, "%s/.floor-%d.pid.", dir, pid);
    snprintf(lock_path, sizeof lock_path, "%s/floor-%d.lock", dir, pid);
    snprintf(lock_temp_prefix, sizeof lock_temp_prefix, "%s/.floor-%d.lock.", dir, pid);
    snprintf(stat_path, sizeof stat_path, "/proc/%d/stat", pid);
    /* a record as writers write it: lines 1-2, boxlite's empty line 3, shimpid's line 4 */
    record_len = (size_t)snprintf(record, sizeof record,
                                  "%d\n%llu\n\nshimpid boot=00000000-1111-2222-3333-444444444444"
                                  " pidfs=%llu\n", pid,
                                  (unsigned long long)read_stat(stat_path), 123456789ULL);
    op_write_in_place(); /* the file the reading operations read */
    return 0;
}

double floor_time(const char *name, int calls) {
    for (size_t i = 0; i < sizeof operations / sizeof operations[0]; i++) {
        if (strcmp(operations[i].name, name) == 0) {
            double t0 = now_ns();
            for (int n = 0; n < calls; n++) operations[i].op();
            return now_ns() - t0;
        }
    }
    return -1;
}

/* shimpid.scan(DIR): each *.pid file read relative to the directory, its pid (and pidfs inode)
   parsed, the process pinned and, if there is one, its inode compared and its exit polled.
   Returns nanoseconds for one pass; *files receives the number of pid files seen. */
double floor_scan(const char *dir, int *files) {
    double t0 = now_ns();
    int n = 0;
    DIR *d = opendir(dir);
    if (!d) die("opendir");
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_type != DT_REG || len < 4 || strcmp(e->d_name + len - 4, ".pid") != 0) continue;
        char buf[4097];
        struct stat st;
        int fd = openat(dfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) die("openat");
        if (fstat(fd, &st) != 0) die("fstat");
        ssize_t got = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (got < 0) die("read");
        buf[got] = 0;
        uint64_t pid = strtoull(buf, NULL, 10), inode = 0;
        char *field = strstr(buf, " pidfs=");
        if (field) inode = strtoull(field + 7, NULL, 10);
        int pidfd = pidfd_open_((pid_t)pid);
        if (pidfd >= 0) {
            sink += (pidfs_inode(pidfd) == inode) + (uint64_t)exited(pidfd);
            close(pidfd);
        }
        n++;
    }
    closedir(d);
    *files = n;
    return now_ns() - t0;
}

void floor_finish(void) {
    unlink(pid_path);
}
