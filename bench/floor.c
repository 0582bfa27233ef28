/*
 * The raw-syscall floor: the system calls shimpid makes for each operation, timed in C with no
 * Python around them. bench/conftest.py compiles this with the system compiler and runs it in the
 * same session as the Python benchmarks, so each syscall-bound operation can be reported as a
 * ratio to its floor.
 *
 *   floor DIR SECONDS PID  ->  one JSON object: {"operation": median ns per call, ...}
 *
 * DIR is where the pid files go (tmpfs or disk). PID is the benchmarking Python process: the pid
 * file records it and /proc/<PID>/stat is read, as the library does for its own pid (the kernel
 * takes longer to render a large process's stat than a small one's). "current" reads this
 * program's own /proc/self/stat, as the library does. Each operation is timed one call at a time for
 * up to SECONDS, and the figure is the median call, the statistic the Python side reports
 * (pytest-benchmark's median round, one call per round for these microsecond operations).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static char pid_path[4096], temp_path[4096], stat_path[64];
static char record[48];
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

static void op_current(void) {
    sink += (uint64_t)getpid();
    sink += read_stat("/proc/self/stat");
}

static void op_stat(void) { sink += read_stat(stat_path); }

static void op_alive(void) {
    if (kill(target, 0) != 0) die("kill");
    sink += read_stat(stat_path);
}

static void write_all(int fd) {
    if (write(fd, record, record_len) != (ssize_t)record_len) die("write");
}

static void op_write_in_place(void) {
    int fd = open(pid_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) die("open");
    write_all(fd);
    close(fd);
}

static void write_temp(void) {
    int fd = open(temp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) die("open temp");
    write_all(fd);
    close(fd);
}

static void op_write_rename(void) {
    write_temp();
    if (rename(temp_path, pid_path) != 0) die("rename");
}

static void op_write_exchange(void) {
    write_temp();
    if (renameat2(AT_FDCWD, temp_path, AT_FDCWD, pid_path, RENAME_EXCHANGE) != 0)
        die("renameat2");
    if (unlink(temp_path) != 0) die("unlink");
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

static void op_identity(void) {
    uint64_t pid = read_pid_file();
    if (kill((pid_t)pid, 0) != 0) die("kill");
    sink += read_stat(stat_path);
}

/* Spawning /bin/true, and spawning it plus the parent-side record shimpid.spawn writes: read
   the child's stat before reaping it, write a temporary file, rename it over the pid file. */
extern char **environ;

static pid_t start_true(void) {
    static char *argv[] = {"/bin/true", NULL};
    pid_t pid;
    if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0) die("posix_spawn");
    return pid;
}

static void reap(pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) != pid) die("waitpid");
}

static void op_spawn(void) { reap(start_true()); }

static void op_spawn_record(void) {
    pid_t pid = start_true();
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    sink += read_stat(path);
    op_write_rename();
    reap(pid);
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

#define MAX_SAMPLES 200000
static double samples[MAX_SAMPLES];

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median time per call, over rounds of BATCH calls for up to `budget` seconds: the Python side
   times its system-call operations in rounds of the same size (bench/conftest.py: SLOW_BATCH). */
#define BATCH 10
static double median(void (*op)(void), double budget) {
    int n = 0;
    for (int i = 0; i < 100; i++) op(); /* warm up */
    double deadline = now_ns() + budget * 1e9;
    while (n < MAX_SAMPLES && (n < 50 || now_ns() < deadline)) {
        double t0 = now_ns();
        for (int i = 0; i < BATCH; i++) op();
        samples[n++] = (now_ns() - t0) / BATCH;
    }
    qsort(samples, (size_t)n, sizeof samples[0], by_value);
    return samples[n / 2];
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s DIR SECONDS_PER_OPERATION PID\n", argv[0]);
        return 2;
    }
    double budget = atof(argv[2]);
    target = (pid_t)atoi(argv[3]);
    snprintf(pid_path, sizeof pid_path, "%s/floor.pid", argv[1]);
    snprintf(temp_path, sizeof temp_path, "%s/.floor.pid.%d.0.tmp", argv[1], (int)getpid());
    snprintf(stat_path, sizeof stat_path, "/proc/%d/stat", (int)target);
    record_len = (size_t)snprintf(record, sizeof record, "%d\n%llu\n", (int)target,
                                  (unsigned long long)read_stat(stat_path));

    printf("{\"current\": %.1f", median(op_current, budget));
    printf(", \"process_start_time\": %.1f", median(op_stat, budget));
    printf(", \"is_process_alive\": %.1f", median(op_alive, budget));
    printf(", \"write_in_place\": %.1f", median(op_write_in_place, budget));
    printf(", \"write_rename\": %.1f", median(op_write_rename, budget));
    printf(", \"write_exchange\": %.1f", median(op_write_exchange, budget));
    printf(", \"read\": %.1f", median(op_read, budget));
    printf(", \"process_identity\": %.1f", median(op_identity, budget));
    printf(", \"spawn\": %.1f", median(op_spawn, budget));
    printf(", \"spawn_record\": %.1f}\n", median(op_spawn_record, budget));
    unlink(pid_path);
    return 0;
}
