/* tuning.c: the fetch engine's defaults, derived from the machine it runs on.
 *
 * prefetch.vcpus, prefetch.workers and chunkSize default to "auto"; a number in the config file,
 * the environment or an option still wins. The rule (docs/ARCHITECTURE.md, "Fetch defaults"):
 *   threads    = cores, at least 2 and at most 64: a thread's transfers spend their CPU in the
 *                kernel's receive path and in copying into tmpfs pages, so speed grew with
 *                threads up to the core count on a 16-core machine (4: 2.8, 8: 3.6, 16: 4.8
 *                GB/s) at about the same CPU per GB; 2 on 2 cores, as before;
 *   transfers  = 8 per thread, at most 64 over prefetch.vcpus threads (derived or given; at
 *                least 2 per thread): 8 hide a request's round trip on each connection; on 16
 *                cores 16 x 4 transfers ran 0.91-0.99x the one-file-per-range ceiling against
 *                0.83-0.88x for 16 x 8 (fewer spans open at once, each reserved sooner);
 *   chunk size = the fetch's bytes spread over twice the transfers in flight, from 4 MiB to
 *                32 MiB: a single large object still keeps every transfer busy, a small model
 *                is not one request per object, and the window in flight (threads x transfers
 *                x chunk) stays under 1/16 of the memory.
 * cores counts the CPUs this process may run on (its affinity mask), capped by a cgroup v2 CPU
 * quota where one is set. */
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

#include "internal.h"

#define MIN_CHUNK (4ULL << 20)
#define MAX_CHUNK (32ULL << 20)
#define TRANSFERS_PER_THREAD 8
#define MIN_TRANSFERS_PER_THREAD 2
#define MAX_TRANSFERS 64
#define MIN_THREADS 2
#define MAX_THREADS 64

/* A cgroup v2 quota ("max 100000" means none) in whole CPUs, rounded up; 0 if none. */
static int cgroup_cpus(void)
{
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "re");
    if (!f)
        return 0;
    long long quota = 0, period = 0;
    int n = fscanf(f, "%lld %lld", &quota, &period);
    fclose(f);
    if (n != 2 || quota <= 0 || period <= 0)
        return 0;
    return (int)((quota + period - 1) / period);
}

void tuning_probe(tuning *t)
{
    cpu_set_t set;
    t->cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                            : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int quota = cgroup_cpus();
    if (quota > 0 && quota < t->cores)
        t->cores = quota;
    if (t->cores < 1)
        t->cores = 1;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    t->memory = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

int tuning_threads(const tuning *t)
{
    int n = t->cores;
    return n < MIN_THREADS ? MIN_THREADS : n > MAX_THREADS ? MAX_THREADS : n;
}

int tuning_transfers(int threads)
{
    int n = MAX_TRANSFERS / (threads > 0 ? threads : 1);
    return n < MIN_TRANSFERS_PER_THREAD ? MIN_TRANSFERS_PER_THREAD
           : n > TRANSFERS_PER_THREAD   ? TRANSFERS_PER_THREAD
                                        : n;
}

uint64_t tuning_chunk_size(const tuning *t, uint64_t total_bytes, int in_flight)
{
    if (in_flight < 1)
        in_flight = 1;
    uint64_t c = total_bytes / (2 * (uint64_t)in_flight);
    if (t->memory && c > t->memory / 16 / (uint64_t)in_flight)
        c = t->memory / 16 / (uint64_t)in_flight;
    if (c > MAX_CHUNK)
        c = MAX_CHUNK;
    if (c < MIN_CHUNK)
        c = MIN_CHUNK;
    return c & ~((64ULL << 10) - 1); /* whole 64 KiB: page-aligned ranges */
}
