/* hookbench.c: ns per call of stat, open+close and read on a file outside MODEL_DIR; run by
 * scripts/bench_hooks.py with and without the shim preloaded. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    const char *path = argv[1];
    long n = strtol(argv[2], NULL, 10);
    struct stat st;
    char buf[64];
    int fd = open(path, O_RDONLY);
    double t0 = now_ns();
    for (long i = 0; i < n; i++)
        stat(path, &st);
    double t1 = now_ns();
    for (long i = 0; i < n; i++)
        close(open(path, O_RDONLY));
    double t2 = now_ns();
    for (long i = 0; i < n; i++)
        pread(fd, buf, sizeof(buf), 0);
    double t3 = now_ns();
    printf("%.1f %.1f %.1f\n", (t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n);
    return 0;
}
