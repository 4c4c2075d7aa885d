/* tmpfs_sink_bench.c: ways for many threads to fill one tmpfs file (or K files) from memory buffers.
 *
 * Simulates the fetch engine's sink (preload/src/engine/fetch.c, sink_map.c): THREADS threads
 * take CHUNK-sized chunks of one SIZE file from a shared counter (so neighbouring chunks are
 * written by different threads at once, as the fetch queue does) and copy each chunk in PIECE
 * pieces from a small per-thread buffer (a curl write callback's data). Each method runs in
 * interleaved rounds on a fresh file; the table gives the median GB/s and the process's sys and
 * user CPU seconds per GB written, mapping, reservation and unmapping included; "setup s" is
 * the part of the time spent before the threads start (fallocate, or populating the whole map).
 *
 * Build: cc -O2 -pthread -o tmpfs_sink_bench scripts/tmpfs_sink_bench.c
 * Run:   ./tmpfs_sink_bench [-d /dev/shm] [-s GiB] [-t threads] [-c chunk MiB] [-p piece KiB]
 *                           [-r rounds] [-m method,method,...] [-k files] [-x]
 * Methods: map (shared mapping, a page fault per 4 KiB), map-falloc (one fallocate first, as
 * sink_map.c does today), map-falloc-pop (that, plus MADV_POPULATE_WRITE on each chunk before it
 * is copied), map-pop (populate each chunk, no fallocate), map-pop-all (one thread populates the
 * whole mapping before the copies), map-chunk-populate (an mmap with MAP_POPULATE per chunk),
 * pwrite (into the one file), pwrite-files (each thread into a file of its own: the ceiling),
 * pwrite-1m (pwrite into the one file in 1 MiB batches), map-falloc-chunk (the mapping, each
 * chunk's pages reserved with fallocate by the thread that copies it, just before the copy).
 * -k K splits the SIZE over K files written at once, thread i taking the chunks of file i % K
 * (as a fetch that spreads its transfers over K items): it applies to every method but
 * pwrite-files, and asks whether tmpfs serializes per file or per filesystem. The K files are
 * set up (fallocate, mapping) by K threads at once, as the fetch's reserve-ahead threads do.
 * -x spreads instead: thread i takes its n-th chunk from file (i + n) % K, so every file is
 * written by every thread (as a fetch whose transfers are round-robin over K items). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

enum method { M_MAP, M_MAP_FALLOC, M_MAP_FALLOC_POP, M_MAP_POP, M_MAP_POP_ALL, M_MAP_CHUNK_POPULATE,
              M_PWRITE, M_PWRITE_FILES, M_PWRITE_1M, M_MAP_FALLOC_CHUNK, M_COUNT };
static const char *method_names[M_COUNT] = {"map", "map-falloc", "map-falloc-pop", "map-pop",
                                            "map-pop-all", "map-chunk-populate", "pwrite",
                                            "pwrite-files", "pwrite-1m", "map-falloc-chunk"};

static const char *dir = "/dev/shm";
static size_t size = 2ul << 30, chunk = 32ul << 20, piece = 64ul << 10;
static int threads = 16, files = 1;
static bool spread;

typedef struct run {
    enum method m;
    int *fd;                /* the K files (-k), each SIZE/K */
    int *fds;               /* pwrite-files: one per thread */
    char **map;             /* each whole file, for the map methods that map once */
    atomic_size_t *next;    /* per file: the next chunk to take */
    atomic_int failed;
} run;

typedef struct worker {
    run *r;
    int id;
    char *buf;
} worker;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int write_all(int fd, const char *p, size_t len, off_t at)
{
    while (len) {
        ssize_t w = pwrite(fd, p, len, at);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w, len -= (size_t)w, at += w;
    }
    return 0;
}

static void *work(void *arg)
{
    worker *w = arg;
    run *r = w->r;
    size_t n_chunks = size / files / chunk;
    size_t files_at = 0;
    for (int turn = 0;; turn++) {
        int f = spread ? (w->id + turn) % files : w->id % files;
        size_t ci = atomic_fetch_add(&r->next[f], 1);
        for (int k = 1; spread && ci >= n_chunks && k < files; k++) {
            f = (f + 1) % files; /* that file is done: another one */
            ci = atomic_fetch_add(&r->next[f], 1);
        }
        if (ci >= n_chunks)
            break;
        size_t off = ci * chunk;
        char *dst = r->map[f] ? r->map[f] + off : NULL;
        if (r->m == M_MAP_FALLOC_POP || r->m == M_MAP_POP) {
            if (madvise(dst, chunk, MADV_POPULATE_WRITE) != 0) {
                perror("madvise(MADV_POPULATE_WRITE)");
                atomic_store(&r->failed, 1);
                return NULL;
            }
        } else if (r->m == M_MAP_FALLOC_CHUNK) {
            if (fallocate(r->fd[f], FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)chunk) != 0)
                die("fallocate");
        } else if (r->m == M_MAP_CHUNK_POPULATE) {
            dst = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd[f],
                       (off_t)off);
            if (dst == MAP_FAILED)
                die("mmap");
        }
        size_t step = r->m == M_PWRITE_1M ? (1ul << 20) : piece;
        for (size_t at = 0; at < chunk; at += step) {
            size_t len = chunk - at < step ? chunk - at : step;
            w->buf[0] = (char)(ci + at / 4096 + 1); /* the data changes, as a socket's would */
            if (dst) {
                memcpy(dst + at, w->buf, len);
            } else {
                int fd = r->m == M_PWRITE_FILES ? r->fds[w->id] : r->fd[f];
                off_t pos = r->m == M_PWRITE_FILES ? (off_t)files_at : (off_t)(off + at);
                if (write_all(fd, w->buf, len, pos) != 0) {
                    perror("pwrite");
                    atomic_store(&r->failed, 1);
                    return NULL;
                }
                files_at += len;
            }
        }
        if (r->m == M_MAP_CHUNK_POPULATE)
            munmap(dst, chunk);
    }
    return NULL;
}

static double cpu_s(const struct rusage *u, int sys)
{
    const struct timeval *t = sys ? &u->ru_stime : &u->ru_utime;
    return t->tv_sec + t->tv_usec / 1e6;
}

typedef struct file_setup {
    run *r;
    int f;
    size_t size;
} file_setup;

/* Opens, sizes, reserves and maps file f of a run. */
static void *setup_file(void *arg)
{
    file_setup *fs = arg;
    run *r = fs->r;
    int f = fs->f;
    char path[4096];
    snprintf(path, sizeof(path), "%s/tmpfs-sink-bench.%d.f%d", dir, getpid(), f);
    r->fd[f] = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (r->fd[f] < 0)
        die(path);
    unlink(path);
    if (ftruncate(r->fd[f], (off_t)fs->size) != 0)
        die("ftruncate");
    if ((r->m == M_MAP_FALLOC || r->m == M_MAP_FALLOC_POP) &&
        fallocate(r->fd[f], FALLOC_FL_KEEP_SIZE, 0, (off_t)fs->size) != 0)
        die("fallocate");
    if (r->m <= M_MAP_POP_ALL || r->m == M_MAP_FALLOC_CHUNK) {
        r->map[f] = mmap(NULL, fs->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd[f], 0);
        if (r->map[f] == MAP_FAILED)
            die("mmap");
        if (r->m == M_MAP_POP_ALL && madvise(r->map[f], fs->size, MADV_POPULATE_WRITE) != 0)
            die("madvise(MADV_POPULATE_WRITE)");
    }
    return NULL;
}

/* One run of a method on fresh files: GB/s, and sys and user CPU-s per GB. */
static void run_once(enum method m, double *gbs, double *sys_gb, double *usr_gb, double *setup)
{
    char path[4096];
    run r = {.m = m, .fd = calloc((size_t)files, sizeof(int)),
             .map = calloc((size_t)files, sizeof(char *)),
             .next = calloc((size_t)files, sizeof(atomic_size_t))};
    size_t file_size = size / (size_t)files;
    *setup = 0;
    for (int f = 0; f < files; f++)
        atomic_init(&r.next[f], 0);
    atomic_init(&r.failed, 0);
    struct rusage u0, u1;
    getrusage(RUSAGE_SELF, &u0);
    double t0 = now();
    if (m == M_PWRITE_FILES) {
        r.fds = calloc((size_t)threads, sizeof(int));
        for (int i = 0; i < threads; i++) {
            snprintf(path, sizeof(path), "%s/tmpfs-sink-bench.%d.%d", dir, getpid(), i);
            r.fds[i] = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
            if (r.fds[i] < 0)
                die(path);
            unlink(path);
        }
    } else {
        double s0 = now();
        pthread_t setters[files];
        file_setup fs[files];
        for (int f = 0; f < files; f++) {
            fs[f] = (file_setup){.r = &r, .f = f, .size = file_size};
            pthread_create(&setters[f], NULL, setup_file, &fs[f]);
        }
        for (int f = 0; f < files; f++)
            pthread_join(setters[f], NULL);
        *setup = now() - s0;
    }
    pthread_t tid[threads];
    worker ws[threads];
    for (int i = 0; i < threads; i++) {
        ws[i] = (worker){.r = &r, .id = i, .buf = malloc(1ul << 20)};
        memset(ws[i].buf, 0x5a ^ i, 1ul << 20);
        pthread_create(&tid[i], NULL, work, &ws[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    for (int f = 0; f < files; f++)
        if (r.map[f])
            munmap(r.map[f], file_size);
    double t = now() - t0;
    getrusage(RUSAGE_SELF, &u1);
    if (atomic_load(&r.failed))
        exit(1);
    /* Every page was written: spot-check one byte per 1 MiB. */
    for (int f = 0; m != M_PWRITE_FILES && f < files; f++) {
        for (size_t at = 0; at < file_size; at += 1ul << 20) {
            char b = 0;
            if (pread(r.fd[f], &b, 1, (off_t)at) != 1 || b == 0) {
                fprintf(stderr, "%s: file %d byte %zu was not written\n", method_names[m], f, at);
                exit(1);
            }
        }
    }
    double gb = size / 1e9;
    *gbs = gb / t;
    *sys_gb = (cpu_s(&u1, 1) - cpu_s(&u0, 1)) / gb;
    *usr_gb = (cpu_s(&u1, 0) - cpu_s(&u0, 0)) / gb;
    for (int i = 0; i < threads; i++)
        free(ws[i].buf);
    if (r.fds) {
        for (int i = 0; i < threads; i++)
            close(r.fds[i]);
        free(r.fds);
    } else {
        for (int f = 0; f < files; f++)
            close(r.fd[f]);
    }
    free(r.fd);
    free(r.map);
    free(r.next);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    int rounds = 3, opt;
    bool want[M_COUNT];
    for (int m = 0; m < M_COUNT; m++)
        want[m] = true;
    while ((opt = getopt(argc, argv, "d:s:t:c:p:r:m:k:x")) != -1) {
        switch (opt) {
        case 'd': dir = optarg; break;
        case 's': size = (size_t)(atof(optarg) * (1ul << 30)); break;
        case 't': threads = atoi(optarg); break;
        case 'k': files = atoi(optarg); break;
        case 'x': spread = true; break;
        case 'c': chunk = (size_t)atoi(optarg) << 20; break;
        case 'p': piece = (size_t)atoi(optarg) << 10; break;
        case 'r': rounds = atoi(optarg); break;
        case 'm':
            for (int m = 0; m < M_COUNT; m++)
                want[m] = false;
            for (char *tok = strtok(optarg, ","); tok; tok = strtok(NULL, ",")) {
                int m = 0;
                while (m < M_COUNT && strcmp(tok, method_names[m]) != 0)
                    m++;
                if (m == M_COUNT) {
                    fprintf(stderr, "unknown method %s\n", tok);
                    return 2;
                }
                want[m] = true;
            }
            break;
        default:
            fprintf(stderr, "usage: %s [-d dir] [-s GiB] [-t threads] [-c chunk MiB] "
                            "[-p piece KiB] [-r rounds] [-m methods] [-k files] [-x]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1 || files < 1 || chunk == 0 || piece == 0 || piece > (1ul << 20) ||
        size % ((size_t)files * chunk)) {
        fprintf(stderr, "bad sizes: each file must be a whole number of chunks, pieces <= 1 MiB\n");
        return 2;
    }
    double gbs[M_COUNT][rounds], sys[M_COUNT][rounds], usr[M_COUNT][rounds], setup[M_COUNT][rounds];
    for (int i = 0; i < rounds; i++)
        for (int m = 0; m < M_COUNT; m++)
            if (want[m])
                run_once(m, &gbs[m][i], &sys[m][i], &usr[m][i], &setup[m][i]);
    printf("%s: %.2f GiB in %d file(s)%s, %d threads, %zu MiB chunks, %zu KiB pieces, "
           "median of %d rounds\n", dir, size / (double)(1ul << 30), files,
           spread ? " (spread)" : "", threads, chunk >> 20, piece >> 10, rounds);
    printf("%-20s %8s %10s %10s %8s   %s\n", "method", "GB/s", "sys s/GB", "usr s/GB", "setup s",
           "GB/s each round");
    for (int m = 0; m < M_COUNT; m++) {
        if (!want[m])
            continue;
        char each[256] = "";
        for (int i = 0; i < rounds; i++)
            snprintf(each + strlen(each), sizeof(each) - strlen(each), "%s%.2f", i ? " " : "",
                     gbs[m][i]);
        printf("%-20s %8.2f %10.3f %10.3f %8.3f   %s\n", method_names[m], median(gbs[m], rounds),
               median(sys[m], rounds), median(usr[m], rounds), median(setup[m], rounds), each);
    }
    return 0;
}
