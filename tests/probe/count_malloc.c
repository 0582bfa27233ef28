/*
 * LD_PRELOAD probe for tests/test_postfork.py: counts malloc/calloc/realloc calls between two
 * markers. The markers are umask() calls with magic masks, because os.umask() returns a cached
 * small int and so allocates nothing itself, unlike a ctypes call. On disarm the count is
 * appended, as a decimal line, to the file named by SHIMPID_PROBE_OUT.
 *
 * glibc only: the real allocators are reached through __libc_malloc and friends, which avoids
 * dlsym() (itself an allocator user) in the hot path.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROBE_ARM 07770
#define PROBE_DISARM 07771

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static volatile int armed;
static volatile long counted;

void *malloc(size_t n) {
    if (armed) __atomic_fetch_add(&counted, 1, __ATOMIC_RELAXED);
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size) {
    if (armed) __atomic_fetch_add(&counted, 1, __ATOMIC_RELAXED);
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n) {
    if (armed) __atomic_fetch_add(&counted, 1, __ATOMIC_RELAXED);
    return __libc_realloc(p, n);
}

static void report(long n) {
    char line[32];
    int i = (int)sizeof line;
    line[--i] = '\n';
    do {
        line[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    const char *path = getenv("SHIMPID_PROBE_OUT");
    int fd = path ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : 2;
    if (fd < 0) return;
    if (write(fd, line + i, sizeof line - (size_t)i) < 0) { /* nothing to do */ }
    if (fd != 2) close(fd);
}

mode_t umask(mode_t mask) {
    static mode_t (*real_umask)(mode_t);
    if (mask == PROBE_ARM) {
        counted = 0;
        armed = 1;
        return 0;
    }
    if (mask == PROBE_DISARM) {
        armed = 0;
        report(counted);
        return 0;
    }
    if (!real_umask) real_umask = (mode_t(*)(mode_t))dlsym(RTLD_NEXT, "umask");
    return real_umask(mask);
}
