/* shim_pin.c: OSSC_PIN_GPU=yes (pin.c). A shared mapping of an object is registered with
 * CUDA only where libcuda.so.1 is loaded already and a context is current; private ones never; its registration ends
 * before munmap, mremap or an mmap with MAP_FIXED lets the address go; a forked child
 * never calls CUDA. CUDA here is fake_cuda.c, loaded by the test (the shim never loads it). */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"

#define CU_MEMHOSTREGISTER_PORTABLE 0x01
#define CU_MEMHOSTREGISTER_READ_ONLY 0x08
#define CONTEXT ((void *)0x1234)

static struct {
    void (*set_current)(void *), (*destroy)(void *);
    size_t (*registered)(const void *, unsigned *);
    int (*count)(void), (*syncs)(void), (*unregisters)(void), (*dead_pushes)(void);
} fake;

/* Loads the fake driver, as a framework's CUDA start-up would load the real one. */
static bool load_fake_cuda(void *context)
{
    void *h = dlopen(FAKE_CUDA, RTLD_NOW | RTLD_GLOBAL);
    CHECK(h != NULL);
    if (!h)
        return false;
    fake.set_current = (void (*)(void *))dlsym(h, "fake_cuda_set_current");
    fake.registered = (size_t(*)(const void *, unsigned *))dlsym(h, "fake_cuda_registered");
    fake.count = (int (*)(void))dlsym(h, "fake_cuda_count");
    fake.syncs = (int (*)(void))dlsym(h, "fake_cuda_syncs");
    fake.unregisters = (int (*)(void))dlsym(h, "fake_cuda_unregisters");
    fake.destroy = (void (*)(void *))dlsym(h, "fake_cuda_destroy");
    fake.dead_pushes = (int (*)(void))dlsym(h, "fake_cuda_dead_pushes");
    fake.set_current(context);
    return true;
}

/* What a mapping of all of object 0 registers: up to the page holding its end. */
static size_t pinned_size(void)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (fx_size(0) + page - 1) / page * page;
}

/* Object 0, all present, mapped whole; its bytes checked. */
static void *map_object(int fd, int flags)
{
    int prot = flags & MAP_PRIVATE ? PROT_READ | PROT_WRITE : PROT_READ;
    void *p = mmap(NULL, fx_size(0), prot, flags, fd, 0);
    CHECK(p != MAP_FAILED && fx_bytes(0, 0, p, fx_size(0)));
    return p;
}

static int open_whole_object(void)
{
    fx_reset();
    fx_land_all(0);
    int fd = open(fx_path(0), O_RDONLY);
    CHECK(fd >= 0);
    return fd;
}

/* No CUDA in the process: the mappings work, and the shim loads nothing. */
SHIM_TEST(pin_without_cuda)
{
    int fd = open_whole_object();
    void *shared = map_object(fd, MAP_SHARED), *private = map_object(fd, MAP_PRIVATE);
    CHECK(dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD) == NULL);
    CHECK(munmap(shared, fx_size(0)) == 0 && munmap(private, fx_size(0)) == 0);
    close(fd);
}

/* CUDA loaded but no context current (not initialized, or not on this thread): nothing is
 * registered, so no context is made. */
SHIM_TEST(pin_without_context)
{
    if (!load_fake_cuda(NULL))
        return;
    int fd = open_whole_object();
    void *p = map_object(fd, MAP_SHARED);
    CHECK(fake.count() == 0);
    munmap(p, fx_size(0));
    close(fd);
}

/* A private mapping is never registered (the kernel would copy its pages to pin them). */
SHIM_TEST(pin_private)
{
    if (!load_fake_cuda(CONTEXT))
        return;
    int fd = open_whole_object();
    void *private = map_object(fd, MAP_PRIVATE), *shared = map_object(fd, MAP_SHARED);
    CHECK(fake.registered(private, NULL) == 0 && fake.registered(shared, NULL) == pinned_size());
    void *ro = mmap(NULL, fx_size(0), PROT_READ, MAP_PRIVATE, fd, 0); /* read-only: still COW */
    CHECK(ro != MAP_FAILED && fake.registered(ro, NULL) == 0);
    munmap(ro, fx_size(0));
    munmap(private, fx_size(0));
    munmap(shared, fx_size(0));
    CHECK(fake.count() == 0);
    close(fd);
}

SHIM_TEST(munmap)
{
    if (!load_fake_cuda(CONTEXT))
        return;
    int fd = open_whole_object();
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);

    /* Registered read-only and portable, up to the page holding the object's end; ended by
     * munmap, after a synchronize (a copy from it may be in flight), in its context. */
    void *p = map_object(fd, MAP_SHARED);
    unsigned flags = 0;
    CHECK(fake.registered(p, &flags) == pinned_size());
    CHECK(flags == (CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_READ_ONLY));
    fake.set_current(NULL); /* another thread, say */
    int syncs = fake.syncs();
    CHECK(munmap(p, fx_size(0)) == 0);
    CHECK(fake.count() == 0 && fake.syncs() == syncs + 1);
    fake.set_current(CONTEXT);

    /* A mapping past the object's end registers the object's pages only. */
    p = mmap(NULL, fx_size(0) + 4 * page, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(p != MAP_FAILED && fake.registered(p, NULL) == pinned_size());
    munmap(p, fx_size(0) + 4 * page);

    /* A partial munmap ends the whole registration; the rest of the mapping stays and reads
     * right. */
    p = map_object(fd, MAP_SHARED);
    CHECK(fake.registered(p, NULL) == pinned_size());
    CHECK(munmap(p, page) == 0 && fake.count() == 0);
    CHECK(fx_bytes(0, page, (char *)p + page, fx_size(0) - page));
    munmap((char *)p + page, fx_size(0) - page);

    /* Unmapping something else leaves a registration alone. */
    p = map_object(fd, MAP_SHARED);
    void *anon = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(anon != MAP_FAILED && munmap(anon, page) == 0);
    CHECK(fake.registered(p, NULL) == pinned_size());

    /* Anonymous memory and files outside MODEL_DIR are never registered. */
    int out = open(fx_outside(), O_RDONLY);
    void *o = mmap(NULL, FX_OUTSIDE_SIZE, PROT_READ, MAP_SHARED, out, 0);
    CHECK(o != MAP_FAILED && fake.count() == 1);
    munmap(o, FX_OUTSIDE_SIZE);
    close(out);

    /* A mapping placed where the program chose (MAP_FIXED, inside a reservation) is not
     * registered: a copy across its edge into the next one would fail. */
    void *room = mmap(NULL, 2 * fx_size(0) + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    CHECK(room != MAP_FAILED);
    void *placed = mmap(room, fx_size(0), PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
    CHECK(placed == room && fx_bytes(0, 0, placed, fx_size(0)));
    CHECK(fake.count() == 1 && fake.registered(placed, NULL) == 0);
    munmap(room, 2 * fx_size(0) + 2 * page);

    /* A mapping placed over it (MAP_FIXED) ends it first. */
    void *over = mmap(p, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    CHECK(over == p && fake.count() == 0);
    munmap(p, fx_size(0));

    /* A forked child has no CUDA: it never ends (or makes) a registration. */
    p = map_object(fd, MAP_SHARED);
    int unregisters = fake.unregisters();
    pid_t pid = fork();
    if (pid == 0) {
        int ok = munmap(p, fx_size(0)) == 0 && fake.unregisters() == unregisters;
        void *again = mmap(NULL, fx_size(0), PROT_READ, MAP_SHARED, fd, 0);
        ok = ok && again != MAP_FAILED && fx_bytes(0, 0, again, fx_size(0));
        _exit(ok ? 0 : 1);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
          WEXITSTATUS(status) == 0);
    CHECK(fake.registered(p, NULL) == pinned_size()); /* the parent's stays */
    munmap(p, fx_size(0));
    CHECK(fake.count() == 0);
    close(fd);
}

/* A registration whose context was destroyed went with it: munmap neither pushes the dead
 * context nor synchronizes a newer one that got the same handle. */
SHIM_TEST(pin_destroyed_context)
{
    if (!load_fake_cuda(CONTEXT))
        return;
    int fd = open_whole_object();
    void *p = map_object(fd, MAP_SHARED);
    CHECK(fake.count() == 1);
    fake.destroy(CONTEXT);
    int syncs = fake.syncs();
    CHECK(munmap(p, fx_size(0)) == 0 && fake.dead_pushes() == 0 && fake.syncs() == syncs);

    p = map_object(fd, MAP_SHARED);
    CHECK(fake.count() == 0); /* no context current: nothing registered */
    munmap(p, fx_size(0));
    fake.set_current(CONTEXT); /* a new context, the old one's handle */
    p = map_object(fd, MAP_SHARED);
    void *q = map_object(fd, MAP_SHARED);
    CHECK(fake.count() == 2);
    fake.destroy(CONTEXT);
    fake.set_current(CONTEXT); /* and another: same handle, another id */
    syncs = fake.syncs();
    CHECK(munmap(p, fx_size(0)) == 0 && fake.syncs() == syncs && fake.dead_pushes() == 0);
    CHECK(munmap(q, fx_size(0)) == 0 && fake.syncs() == syncs);
    close(fd);
}

SHIM_TEST(mremap)
{
    if (!load_fake_cuda(CONTEXT))
        return;
    int fd = open_whole_object();
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = map_object(fd, MAP_SHARED);
    CHECK(fake.registered(p, NULL) == pinned_size());
    void *q = mremap(p, fx_size(0), page, 0); /* shrunk in place */
    CHECK(q == p && fake.count() == 0 && fx_bytes(0, 0, q, page));
    munmap(q, page);

    /* Moved onto a registered mapping (MREMAP_FIXED): that one ends too. */
    p = map_object(fd, MAP_SHARED);
    void *other = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(other != MAP_FAILED && fake.count() == 1);
    q = mremap(other, page, page, MREMAP_MAYMOVE | MREMAP_FIXED, p);
    CHECK(q == p && fake.count() == 0);
    munmap(q, page);
    munmap((char *)p + page, fx_size(0) - page);
    close(fd);
}

int main(int argc, char **argv)
{
    /* Read by the shim before main, in the run the driver execs with this environment. */
    (void)argc;
    setenv("OSSC_PIN_GPU", "yes", 1);
    return fx_main(argc, argv);
}
