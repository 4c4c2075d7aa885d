/* pin.c: OSSC_PIN_GPU=yes: a shared mapping of an object's bytes is registered with CUDA
 * (cuMemHostRegister, read-only), so that copies from it to a GPU run at pinned speed
 * instead of through the driver's pageable staging buffers. Only in a process that has CUDA
 * loaded and a context current on the mapping thread: the shim never loads CUDA
 * (dlopen RTLD_NOLOAD) and never creates a context (cuCtxGetCurrent, no cuInit), so a
 * process that would fork workers before touching the GPU is left as it was.
 *
 * Private mappings are left alone: the driver pins for the long term, and the kernel then
 * gives a copy-on-write mapping its own copy of every page first (measured on an H100 host:
 * 1.1 s and 2.2 GB more memory for a 2.2 GB shard; safetensors' load_file, which maps
 * privately, ran five times slower; docs/BENCHMARKS.md).
 *
 * Why this is safe for the bytes: a mapping is registered only after the hook waited for the
 * whole mapped range, and present bytes of a data file never change (a release unlinks the
 * file, never rewrites it). Why a registration must end with its mapping: the driver keeps
 * the pages it pinned at that address, so a later mapping at the same address would be
 * copied from the old pages. munmap, mremap and an mmap with MAP_FIXED over a registered
 * range therefore unregister it first (after a cuCtxSynchronize: a copy from it may still be
 * in flight), in the context it was made in if that context still exists (a destroyed one
 * took its registrations with it, and pushing it would be undefined), and a forked child
 * forgets the table (CUDA is unusable there). Every munmap passes here, Python's arena frees
 * among them: a range outside [lowest, highest) of the registered addresses, read without a
 * lock, costs a few loads. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "shim.h"

/* The driver API's few names we need (cuda.h is not a build dependency). */
typedef int cu_result;
typedef void *cu_context;
#define CU_MEMHOSTREGISTER_PORTABLE 0x01
#define CU_MEMHOSTREGISTER_READ_ONLY 0x08

static struct {
    cu_result (*ctx_get_current)(cu_context *);
    cu_result (*ctx_push)(cu_context);
    cu_result (*ctx_pop)(cu_context *);
    cu_result (*ctx_synchronize)(void);
    cu_result (*host_register)(void *, size_t, unsigned int);
    cu_result (*host_unregister)(void *);
    cu_result (*ctx_get_api_version)(cu_context, unsigned int *);
    cu_result (*ctx_get_id)(cu_context, unsigned long long *); /* CUDA 12; NULL before */
} cu;
static int cu_bound; /* 1 once every name above resolved (the handle is kept) */

typedef struct pin {
    uintptr_t start;
    size_t length;
    cu_context ctx; /* the context current at registration: the one to unregister in */
    unsigned long long ctx_id; /* its id (cuCtxGetId): a handle reused by a newer context
                                * has another */
} pin;

#define PINS_MAX 4096
static pin pins[PINS_MAX];
/* Read without the lock by the munmap fast path; written under it. */
static int n_pins;
static uintptr_t pins_low = UINTPTR_MAX, pins_high; /* bounds of the registered ranges */
static pthread_mutex_t pins_lock = PTHREAD_MUTEX_INITIALIZER;
static int enabled; /* set before main; cleared if the driver lacks a call (atomic) */
/* A CUDA call of ours runs on this thread: the driver's own mmap and munmap pass by. */
static __thread int in_cuda;

void pin_init(void)
{
    const char *v = getenv("OSSC_PIN_GPU");
    enabled = v && strcmp(v, "yes") == 0;
    if (v && *v && !enabled && strcmp(v, "no") != 0)
        shim_log("WARN", "OSSC_PIN_GPU='%s' is neither yes nor no; no mapping is pinned", v);
}

bool pin_enabled(void) { return __atomic_load_n(&enabled, __ATOMIC_RELAXED); }

/* Binds the driver's functions if libcuda.so.1 is already in this process. */
static bool cuda_loaded(void)
{
    if (__atomic_load_n(&cu_bound, __ATOMIC_ACQUIRE))
        return true;
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!h)
        return false;
    cu.ctx_get_current = (cu_result(*)(cu_context *))dlsym(h, "cuCtxGetCurrent");
    cu.ctx_push = (cu_result(*)(cu_context))dlsym(h, "cuCtxPushCurrent_v2");
    cu.ctx_pop = (cu_result(*)(cu_context *))dlsym(h, "cuCtxPopCurrent_v2");
    cu.ctx_synchronize = (cu_result(*)(void))dlsym(h, "cuCtxSynchronize");
    cu.host_register = (cu_result(*)(void *, size_t, unsigned int))dlsym(h, "cuMemHostRegister_v2");
    cu.host_unregister = (cu_result(*)(void *))dlsym(h, "cuMemHostUnregister");
    cu.ctx_get_api_version =
        (cu_result(*)(cu_context, unsigned int *))dlsym(h, "cuCtxGetApiVersion");
    cu.ctx_get_id = (cu_result(*)(cu_context, unsigned long long *))dlsym(h, "cuCtxGetId");
    if (!cu.ctx_get_current || !cu.ctx_push || !cu.ctx_pop || !cu.ctx_synchronize ||
        !cu.host_register || !cu.host_unregister || !cu.ctx_get_api_version) {
        shim_log("WARN", "OSSC_PIN_GPU: libcuda.so.1 lacks the driver calls it needs; no "
                 "mapping is pinned");
        __atomic_store_n(&enabled, 0, __ATOMIC_RELAXED);
        dlclose(h);
        return false;
    }
    __atomic_store_n(&cu_bound, 1, __ATOMIC_RELEASE); /* h stays open: the pointers too */
    return true;
}

/* The context's id where the driver has ids (CUDA 12), else 0. */
static unsigned long long context_id(cu_context ctx)
{
    unsigned long long id = 0;
    if (cu.ctx_get_id && cu.ctx_get_id(ctx, &id) != 0)
        id = 0;
    return id;
}

/* The context a registration was made in still exists: the driver answers for its handle,
 * with the same id where it has ids. */
static bool context_alive(const pin *p)
{
    unsigned int version;
    if (p->ctx_id)
        return context_id(p->ctx) == p->ctx_id;
    return cu.ctx_get_api_version(p->ctx, &version) == 0;
}

/* Under pins_lock, after pins changed: the bounds the fast path reads. */
static void set_bounds(void)
{
    uintptr_t low = UINTPTR_MAX, high = 0;
    for (int i = 0; i < n_pins; i++) {
        if (pins[i].start < low)
            low = pins[i].start;
        if (pins[i].start + pins[i].length > high)
            high = pins[i].start + pins[i].length;
    }
    __atomic_store_n(&pins_low, low, __ATOMIC_RELEASE);
    __atomic_store_n(&pins_high, high, __ATOMIC_RELEASE);
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

void pin_mapping(void *addr, size_t length, int flags, int object)
{
    /* MAP_SHARED or MAP_SHARED_VALIDATE: the page cache's pages, nothing copied. Not one placed
     * with MAP_FIXED: a program places mappings side by side to use them as one range, and a
     * copy that runs over a registration's edge fails (the driver says "invalid argument",
     * where the same copy from unregistered memory works), so registering would break it. */
    bool shared = (flags & MAP_TYPE) != MAP_PRIVATE;
    if (!pin_enabled() || !shared || (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) || in_cuda ||
        addr == MAP_FAILED || length == 0 || !cuda_loaded())
        return;
    in_cuda = 1;
    cu_context ctx = NULL;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long long ctx_id = 0;
    cu_result r = cu.ctx_get_current(&ctx);
    if (r == 0 && ctx) { /* else no context on this thread: creating one is not ours to do */
        ctx_id = context_id(ctx);
        r = cu.host_register(addr, length,
                             CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_READ_ONLY);
    }
    in_cuda = 0;
    if (r != 0 || !ctx) {
        if (r != 0)
            shim_log("WARN", "OSSC_PIN_GPU: cannot register %zu bytes of object %d with CUDA "
                     "(CUresult %d); copies from this mapping run at pageable speed", length,
                     object, r);
        return;
    }
    pthread_mutex_lock(&pins_lock);
    bool kept = n_pins < PINS_MAX;
    if (kept) {
        pins[n_pins] = (pin){(uintptr_t)addr, length, ctx, ctx_id};
        __atomic_store_n(&n_pins, n_pins + 1, __ATOMIC_RELEASE);
        set_bounds();
    }
    pthread_mutex_unlock(&pins_lock);
    if (!kept) { /* untracked it could outlive its mapping: never keep one we cannot end */
        in_cuda = 1;
        cu.host_unregister(addr);
        in_cuda = 0;
        shim_log("WARN", "OSSC_PIN_GPU: %d mappings registered already; this one is not",
                 PINS_MAX);
        return;
    }
    shim_log("INFO", "OSSC_PIN_GPU: registered %zu bytes of object %d in %.1f ms", length,
             object, ms_since(&t0));
}

void pin_forget(const void *addr, size_t length)
{
    uintptr_t a = (uintptr_t)addr, end = a + length;
    if (!__atomic_load_n(&n_pins, __ATOMIC_ACQUIRE) || in_cuda || length == 0 ||
        end <= __atomic_load_n(&pins_low, __ATOMIC_ACQUIRE) ||
        a >= __atomic_load_n(&pins_high, __ATOMIC_ACQUIRE))
        return;
    pin gone[16];
    size_t n_gone;
    do { /* in batches: a range may cover many registrations */
        n_gone = 0;
        pthread_mutex_lock(&pins_lock);
        for (int i = 0; i < n_pins && n_gone < sizeof(gone) / sizeof(gone[0]);) {
            if (pins[i].start < end && a < pins[i].start + pins[i].length) {
                gone[n_gone++] = pins[i];
                pins[i] = pins[n_pins - 1];
                __atomic_store_n(&n_pins, n_pins - 1, __ATOMIC_RELEASE);
            } else {
                i++;
            }
        }
        if (n_gone)
            set_bounds();
        pthread_mutex_unlock(&pins_lock);
        in_cuda = 1;
        for (size_t i = 0; i < n_gone; i++) {
            cu_context popped;
            /* A context that is gone took its registrations with it. */
            if (!context_alive(&gone[i]) || cu.ctx_push(gone[i].ctx) != 0)
                continue;
            cu.ctx_synchronize();
            cu.host_unregister((void *)gone[i].start);
            cu.ctx_pop(&popped);
        }
        in_cuda = 0;
    } while (n_gone == sizeof(gone) / sizeof(gone[0]));
}

void pin_atfork_child(void)
{
    pthread_mutex_init(&pins_lock, NULL);
    __atomic_store_n(&n_pins, 0, __ATOMIC_RELEASE);
    set_bounds();
}
