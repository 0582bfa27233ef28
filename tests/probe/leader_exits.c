/* A process whose main thread exits (pthread_exit) while another thread runs on: /proc then
 * shows it as a zombie ("State: Z", "Threads: 2"), though the process is alive. Prints "ready"
 * once the main thread has gone; the other thread sleeps until the process is killed. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static void *run(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

int main(void) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, run, NULL) != 0) return 1;
    printf("ready\n");
    fflush(stdout);
    pthread_exit(NULL);
}
