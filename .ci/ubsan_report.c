/*
 * LD_PRELOAD shim for .ci/asan: writes each UndefinedBehaviorSanitizer report to a file, so a
 * report in any process (a child the tests start, whose stderr they capture) fails the run.
 *
 * Why not UBSAN_OPTIONS=log_path: with gcc, -fsanitize=address,undefined loads two runtimes,
 * libasan and libubsan, each with its own copy of sanitizer_common. libubsan sets its log path
 * through __sanitizer_set_report_path, which it calls through its PLT, so the call lands in
 * libasan's copy (loaded first): ASan's path changes, UBSan keeps writing to stderr.
 * (clang's runtime has one copy, so there log_path works; gcc's is the one CI has.)
 *
 * Instead this defines __ubsan_on_report, the hook the UBSan runtime calls for every error it
 * reports (a weak no-op in libubsan, called through its PLT, so the first definition in the
 * lookup order wins: preload this before libubsan, after libasan). The file gets the location,
 * message and check; the stack goes to the process's stderr, as usual.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void __ubsan_get_current_report_data(const char **kind, const char **message,
                                     const char **filename, unsigned *line, unsigned *col,
                                     char **address);

void __ubsan_on_report(void) {
    const char *kind = "?", *message = "?", *filename = "?";
    unsigned line = 0, col = 0;
    char *address = 0;
    char path[4096];
    const char *dir = getenv("SHIMPID_UBSAN_REPORTS");
    if (!dir) return;
    __ubsan_get_current_report_data(&kind, &message, &filename, &line, &col, &address);
    snprintf(path, sizeof path, "%s/ubsan.%ld", dir, (long)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    dprintf(fd, "%s:%u:%u: runtime error: %s [%s] (pid %ld; its stderr has the stack)\n",
            filename, line, col, message, kind, (long)getpid());
    close(fd);
}
