/* fake_cuda.c: a stand-in for libcuda.so.1 (its soname) with the driver calls the shim's
 * GPU pinning makes (pin.c), for shim_pin.c: it records registrations instead of pinning.
 * Like the real driver it maps and unmaps memory of its own inside its calls, a context has
 * an id, and a destroyed context takes its registrations with it (its handle may come back
 * for a newer context, with another id). */
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#define FAKE_MAX 64

static struct {
    void *ptr;
    size_t size;
    unsigned flags;
    void *ctx;
} regs[FAKE_MAX];
static struct {
    void *handle;
    unsigned long long id;
} live[8];
static void *current, *pushed[8];
static int depth, syncs, unregisters, dead_pushes;
static unsigned long long next_id = 1;

static int live_slot(const void *ctx)
{
    for (int i = 0; i < 8; i++)
        if (ctx && live[i].handle == ctx)
            return i;
    return -1;
}

/* ctx becomes current (NULL: none); a handle not live yet is a new context. */
void fake_cuda_set_current(void *ctx)
{
    if (ctx && live_slot(ctx) < 0) {
        int free_slot = live_slot(NULL);
        for (int i = 0; i < 8 && free_slot < 0; i++)
            if (!live[i].handle)
                free_slot = i;
        live[free_slot].handle = ctx;
        live[free_slot].id = next_id++;
    }
    current = ctx;
}

/* cuCtxDestroy: its registrations end with it, and it is current nowhere. */
void fake_cuda_destroy(void *ctx)
{
    int slot = live_slot(ctx);
    if (slot >= 0)
        live[slot].handle = NULL;
    for (int i = 0; i < FAKE_MAX; i++)
        if (regs[i].ctx == ctx)
            regs[i].size = 0;
    if (current == ctx)
        current = NULL;
}

int fake_cuda_syncs(void) { return syncs; }
int fake_cuda_unregisters(void) { return unregisters; }
/* Pushes of a destroyed context: undefined in the real driver, so never right. */
int fake_cuda_dead_pushes(void) { return dead_pushes; }

/* The size registered at ptr, 0 if none; *flags its flags. */
size_t fake_cuda_registered(const void *ptr, unsigned *flags)
{
    for (int i = 0; i < FAKE_MAX; i++)
        if (regs[i].ptr == ptr && regs[i].size) {
            if (flags)
                *flags = regs[i].flags;
            return regs[i].size;
        }
    return 0;
}

int fake_cuda_count(void)
{
    int n = 0;
    for (int i = 0; i < FAKE_MAX; i++)
        n += regs[i].size != 0;
    return n;
}

static void driver_bookkeeping(void) /* the real driver maps memory of its own, too */
{
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED)
        munmap(p, 4096);
}

int cuCtxGetCurrent(void **ctx)
{
    *ctx = current;
    return 0;
}

int cuCtxGetApiVersion(void *ctx, unsigned int *version)
{
    if (live_slot(ctx) < 0)
        return 201; /* CUDA_ERROR_INVALID_CONTEXT */
    *version = 3020;
    return 0;
}

int cuCtxGetId(void *ctx, unsigned long long *id)
{
    int slot = live_slot(ctx);
    if (slot < 0)
        return 201;
    *id = live[slot].id;
    return 0;
}

int cuCtxPushCurrent_v2(void *ctx)
{
    if (ctx && live_slot(ctx) < 0)
        dead_pushes++;
    if (depth == 8 || !ctx)
        return 201; /* CUDA_ERROR_INVALID_CONTEXT */
    pushed[depth++] = current;
    current = ctx;
    return 0;
}

int cuCtxPopCurrent_v2(void **ctx)
{
    if (!depth)
        return 201;
    *ctx = current;
    current = pushed[--depth];
    return 0;
}

int cuCtxSynchronize(void)
{
    if (!current)
        return 201;
    syncs++;
    return 0;
}

int cuMemHostRegister_v2(void *ptr, size_t size, unsigned flags)
{
    if (!current)
        return 201;
    driver_bookkeeping();
    for (int i = 0; i < FAKE_MAX; i++)
        if (!regs[i].size) {
            regs[i].ptr = ptr;
            regs[i].size = size;
            regs[i].flags = flags;
            regs[i].ctx = current;
            return 0;
        }
    return 2; /* CUDA_ERROR_OUT_OF_MEMORY */
}

int cuMemHostUnregister(void *ptr)
{
    if (!current)
        return 201;
    driver_bookkeeping();
    for (int i = 0; i < FAKE_MAX; i++)
        if (regs[i].ptr == ptr && regs[i].size) {
            regs[i].size = 0;
            unregisters++;
            return 0;
        }
    return 713; /* CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED */
}
