/* fault.c: a mapping of an object whose bytes are not all present yet is served page by page
 * as its chunks land, instead of mmap waiting for the whole range first: a loader that maps
 * a file (safetensors) then works on the first tensors while the rest is still fetched.
 *
 * Page faults reach no hook; userfaultfd hands them to one thread of ours. It waits for the
 * chunk that holds the page (asking the owner for it first, as a read does) and then maps
 * that chunk's pages at once (UFFDIO_CONTINUE). A range is registered in both modes on the
 * data file's tmpfs pages: MINOR for pages already in the file (the owner reserves pages
 * before it writes them: zeros until then), MISSING for holes. A page is mapped only once its
 * chunk's ready bit is set, and the kernel maps no neighbour behind our back (no fault-around
 * on a minor-mode range), so no reader sees a byte that has not landed.
 *
 * A chunk that cannot be fetched (or whose owner died, or whose read timeout passed) is
 * mapped over with a range past the end of an empty memfd: its access gets SIGBUS, as an I/O
 * error on a mapped file does, never zeros; the log line is session_wait's. Once a range is
 * whole it is unregistered, and its faults are the kernel's again.
 *
 * Where this cannot hold, mmap waits for the whole range as before (the caller's fallback):
 * - no full userfaultfd: it needs root or CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=1, or
 *   access to /dev/userfaultfd (the user-mode-only kind would fail a write(2) from the
 *   mapping with EFAULT instead of waiting); containers' default seccomp profiles deny it;
 * - a shared mapping needs a data-file fd open for writing (the kernel registers only ranges
 *   that may be made writable; the mapping keeps the caller's read-only prot): a reader of
 *   another user's shared session has none, and a writable shared mapping is refused as before;
 * - MAP_POPULATE (the caller wants every page now), OSSC_PIN_GPU (pinning needs the pages),
 *   OSSC_USERFAULTFD=no.
 * fork copies mappings without their registration, and mremap moves one without it: both
 * first wait for the registered ranges to be whole (fault_before_fork, fault_settle). */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

#ifdef UFFDIO_CONTINUE /* kernel headers 5.13 or later; with older ones mmap always waits */

#ifndef USERFAULTFD_IOC_NEW /* headers before 6.1 */
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define RANGES_MAX 1024
#define PENDING_MAX 1024
#define IDLE_POLL_MS 200 /* how often a whole range is noticed while no fault comes */

/* A registered range [start, end) whose first byte is byte `offset` of object. */
typedef struct served {
    uintptr_t start, end;
    uint64_t offset;
    int object;
    uint64_t id; /* unique: a range found again after a wait is the same mapping */
} served;

static served ranges[RANGES_MAX];
static int n_ranges;
static uint64_t next_id = 1;
static pthread_mutex_t ranges_lock = PTHREAD_MUTEX_INITIALIZER;
static int uffd = -1;
static int state; /* 0 not tried yet, 1 serving, -1 off (under ranges_lock) */
static int wanted = 1; /* OSSC_USERFAULTFD */
static uintptr_t page;

void fault_init(void)
{
    const char *v = getenv("OSSC_USERFAULTFD");
    wanted = !(v && strcmp(v, "no") == 0);
    if (v && *v && strcmp(v, "no") != 0 && strcmp(v, "yes") != 0)
        shim_log("WARN", "OSSC_USERFAULTFD='%s' is neither yes nor no; taken as yes", v);
    page = (uintptr_t)sysconf(_SC_PAGESIZE);
}

/* A userfaultfd that also serves the kernel's own accesses, with the shmem features. */
static int open_uffd(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int dev = real_open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        fd = dev < 0 ? -1 : ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        if (dev >= 0)
            real_close(dev);
    }
    struct uffdio_api api = {.api = UFFD_API,
                             .features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM};
    if (fd >= 0 && ioctl(fd, UFFDIO_API, &api) != 0) {
        real_close(fd);
        fd = -1;
    }
    return fd;
}

/* Under ranges_lock: the range holding address a, or NULL. */
static served *range_at(uintptr_t a)
{
    for (int i = 0; i < n_ranges; i++)
        if (ranges[i].start <= a && a < ranges[i].end)
            return &ranges[i];
    return NULL;
}

static void drop_range(served *r) { *r = ranges[--n_ranges]; }

static void wake(uintptr_t a, uintptr_t b)
{
    struct uffdio_range range = {.start = a, .len = b - a};
    ioctl(uffd, UFFDIO_WAKE, &range);
}

/* Maps [a, b) over with pages past the end of an empty memfd: an access gets SIGBUS. If
 * that cannot be done, the faulting thread is left waiting, never handed the hole. */
static void fail_pages(uintptr_t a, uintptr_t b)
{
    int fd = memfd_create("ossc-not-fetched", MFD_CLOEXEC);
    bool failed = fd >= 0 && real_mmap((void *)a, b - a, PROT_READ | PROT_WRITE,
                                       MAP_SHARED | MAP_FIXED, fd, 0) != MAP_FAILED;
    if (!failed)
        shim_log("ERROR", "cannot fail the pages of a mapping whose bytes are missing: %s; "
                 "its access waits for good", strerror(errno));
    if (fd >= 0)
        real_close(fd);
    if (failed)
        wake(a, b);
}

/* Under ranges_lock, with r's bytes in [a, b) present: maps their pages (those another
 * fault mapped already are skipped) and wakes whoever waits on them. */
static void map_pages(const served *r, uintptr_t a, uintptr_t b)
{
    for (uintptr_t at = a; at < b;) {
        struct uffdio_continue c = {.range = {.start = at, .len = b - at}};
        if (ioctl(uffd, UFFDIO_CONTINUE, &c) == 0)
            break;
        int e = errno;
        if (c.mapped > 0)
            at += (uintptr_t)c.mapped;
        if (e == EEXIST)
            at += page; /* mapped already */
        else if (e != EAGAIN) {
            shim_log("ERROR", "cannot map the pages of object %d at offset %llu: %s",
                     r->object, (unsigned long long)(r->offset + (at - r->start)), strerror(e));
            fail_pages(at, b);
            return;
        }
    }
    wake(a, b);
}

/* Serves one fault at page address a: maps the pages of the chunk that holds it, once it
 * is present; with wait, waits for it first. False if it is not present and wait is false. */
static bool serve(uintptr_t a, bool wait)
{
    pthread_mutex_lock(&ranges_lock);
    served *r = range_at(a), seen = r ? *r : (served){0};
    pthread_mutex_unlock(&ranges_lock);
    if (!r) { /* unmapped or mapped over meanwhile: the retried fault is the kernel's */
        wake(a, a + page);
        return true;
    }
    uint64_t chunk = session_chunk_size(seen.object), size = session_object_size(seen.object);
    uint64_t at = seen.offset + (a - seen.start), first = at - at % chunk;
    uint64_t last = first + chunk < size ? first + chunk : size;
    int e = 0;
    if (!session_present(seen.object, first, last - first)) {
        if (!wait)
            return false;
        e = session_wait(seen.object, first, last - first, NULL);
    }
    /* Its pages within the range, found again: a munmap may have ended it meanwhile. */
    uintptr_t from = seen.start + (first > seen.offset ? first - seen.offset : 0);
    uintptr_t to = seen.start + (last - seen.offset);
    to = (to + page - 1) / page * page;
    pthread_mutex_lock(&ranges_lock);
    r = range_at(a);
    if (r && r->id == seen.id) {
        to = to < r->end ? to : r->end;
        if (e)
            fail_pages(from, to);
        else
            map_pages(r, from, to);
    } else {
        wake(a, a + page);
    }
    pthread_mutex_unlock(&ranges_lock);
    return true;
}

static uint64_t range_bytes(const served *r) { return r->end - r->start; }

/* Unregisters the ranges that are whole now: their later faults are the kernel's. */
static void retire_whole(void)
{
    pthread_mutex_lock(&ranges_lock);
    for (int i = n_ranges - 1; i >= 0; i--) {
        served *r = &ranges[i];
        if (session_present(r->object, r->offset, range_bytes(r))) {
            struct uffdio_range range = {.start = r->start, .len = r->end - r->start};
            ioctl(uffd, UFFDIO_UNREGISTER, &range);
            drop_range(r);
        }
    }
    pthread_mutex_unlock(&ranges_lock);
}

/* The thread that serves the faults: the ones whose chunk is present at once, then waits
 * for the oldest other one. */
static void *serve_faults(void *arg)
{
    (void)arg;
    static uintptr_t pending[PENDING_MAX];
    int n_pending = 0;
    for (;;) {
        struct pollfd p = {.fd = uffd, .events = POLLIN};
        poll(&p, 1, n_pending ? 0 : IDLE_POLL_MS);
        struct uffd_msg msgs[64];
        size_t room = PENDING_MAX - (size_t)n_pending;
        room = room < 64 ? room : 64;
        ssize_t got = room ? real_read(uffd, msgs, room * sizeof(msgs[0])) : 0;
        for (ssize_t i = 0; got > 0 && i < got / (ssize_t)sizeof(msgs[0]); i++)
            if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
                pending[n_pending++] = (uintptr_t)msgs[i].arg.pagefault.address / page * page;
        for (int i = n_pending - 1; i >= 0; i--)
            if (serve(pending[i], false))
                pending[i] = pending[--n_pending];
        if (n_pending && serve(pending[0], true))
            pending[0] = pending[--n_pending];
        retire_whole();
    }
    return NULL;
}

/* Under ranges_lock: opens the userfaultfd and starts the thread, once. */
static bool ready_to_serve(void)
{
    if (state)
        return state > 0;
    state = -1;
    if ((uffd = open_uffd()) < 0)
        return false;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* the program's signals are not ours */
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int e = pthread_create(&t, &attr, serve_faults, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        real_close(uffd);
        uffd = -1;
        return false;
    }
    pthread_setname_np(t, "ossc-faults");
    state = 1;
    return true;
}

/* A read-write fd on the data file fd has open, for a shared mapping the kernel will let us
 * register; -1 if there is none. It holds a shared flock as every open of a data file does
 * (session.c's open_data): the mapping keeps it, and with it the file from being retired and
 * fetched anew under the mapping. */
static int writable_twin(int object, int fd)
{
    char path[OSSC_MODEL_DIR_MAX];
    session_data_path(object, path, sizeof(path));
    int twin = real_open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    struct stat a, b;
    if (twin >= 0 && (flock(twin, LOCK_SH | LOCK_NB) != 0 || fstat(twin, &a) != 0 ||
                      fstat(fd, &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino)) {
        real_close(twin);
        twin = -1;
    }
    return twin;
}

void *fault_map(void *addr, size_t length, int prot, int flags, int fd, int64_t offset,
                int object, bool *served_here)
{
    *served_here = false;
    uint64_t size = session_object_size(object);
    bool shared = (flags & MAP_TYPE) != MAP_PRIVATE;
    /* A failed object's mmap fails with its errno at once, as before. */
    if (!wanted || pin_enabled() || (flags & MAP_POPULATE) || (shared && (prot & PROT_WRITE)) ||
        offset < 0 || (uint64_t)offset >= size || length == 0 || session_object_failed(object))
        return MAP_FAILED;
    pthread_mutex_lock(&ranges_lock);
    bool can = ready_to_serve() && n_ranges < RANGES_MAX;
    pthread_mutex_unlock(&ranges_lock);
    int twin = can && shared ? writable_twin(object, fd) : -1;
    if (!can || (shared && twin < 0))
        return MAP_FAILED;
    void *p = real_mmap(addr, length, prot, flags, shared ? twin : fd, (off_t)offset);
    if (twin >= 0)
        real_close(twin);
    if (p == MAP_FAILED) /* the caller's own mmap will say why */
        return MAP_FAILED;
    uint64_t in_object = size - (uint64_t)offset;
    uintptr_t n = (uintptr_t)(length < in_object ? length : in_object);
    served r = {.start = (uintptr_t)p, .end = (uintptr_t)p + (n + page - 1) / page * page,
                .offset = (uint64_t)offset, .object = object};
    struct uffdio_register reg = {
        .range = {.start = r.start, .len = r.end - r.start},
        .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR};
    pthread_mutex_lock(&ranges_lock);
    bool ok = n_ranges < RANGES_MAX && ioctl(uffd, UFFDIO_REGISTER, &reg) == 0;
    if (ok) {
        r.id = next_id++;
        ranges[n_ranges++] = r;
    }
    pthread_mutex_unlock(&ranges_lock);
    if (!ok) { /* nothing touched it yet: the caller maps again, the old way */
        real_munmap(p, length);
        return MAP_FAILED;
    }
    *served_here = true;
    return p;
}

/* Waits until r's bytes are all present, then, if r is still the range with its id, fails
 * its pages if they cannot be, unregisters and drops it: what fork copies and mremap moves
 * must be whole. */
static void settle(served r)
{
    int e = session_wait(r.object, r.offset, range_bytes(&r), NULL);
    pthread_mutex_lock(&ranges_lock);
    served *now = range_at(r.start);
    if (now && now->id == r.id) {
        if (e)
            fail_pages(now->start, now->end);
        struct uffdio_range range = {.start = now->start, .len = now->end - now->start};
        ioctl(uffd, UFFDIO_UNREGISTER, &range);
        drop_range(now);
    }
    pthread_mutex_unlock(&ranges_lock);
}

/* Settles every range that overlaps [a, b) (all of them, for b == UINTPTR_MAX). */
static void settle_overlapping(uintptr_t a, uintptr_t b)
{
    for (;;) {
        pthread_mutex_lock(&ranges_lock);
        served r = {0};
        for (int i = 0; i < n_ranges && !r.id; i++)
            if (ranges[i].start < b && a < ranges[i].end)
                r = ranges[i];
        pthread_mutex_unlock(&ranges_lock);
        if (!r.id)
            return;
        settle(r);
    }
}

void fault_settle(const void *addr, size_t length)
{
    if (__atomic_load_n(&n_ranges, __ATOMIC_ACQUIRE))
        settle_overlapping((uintptr_t)addr, (uintptr_t)addr + length);
}

void fault_forget(const void *addr, size_t length)
{
    if (!__atomic_load_n(&n_ranges, __ATOMIC_ACQUIRE))
        return; /* every munmap passes here: one load when nothing is served */
    uintptr_t a = (uintptr_t)addr, b = a + length;
    pthread_mutex_lock(&ranges_lock);
    if (n_ranges == RANGES_MAX) { /* no room for a split: what it touches gets whole */
        pthread_mutex_unlock(&ranges_lock);
        settle_overlapping(a, b);
        return;
    }
    /* Ranges never overlap, so at most one is split in two and needs the free slot. */
    for (int i = n_ranges - 1; i >= 0; i--) {
        served *r = &ranges[i], right = *r;
        if (r->end <= a || b <= r->start)
            continue;
        right.start = b;
        right.offset += b - r->start;
        right.id = next_id++;
        bool left = r->start < a;
        if (left)
            r->end = a;
        if (right.start < right.end && left)
            ranges[n_ranges++] = right;
        else if (right.start < right.end)
            *r = right;
        else if (!left)
            drop_range(r);
    }
    pthread_mutex_unlock(&ranges_lock);
}

void fault_before_fork(void)
{
    if (__atomic_load_n(&n_ranges, __ATOMIC_ACQUIRE))
        settle_overlapping(0, UINTPTR_MAX);
}

/* In a forked child: the userfaultfd is the parent's, and its thread is not here. */
void fault_atfork_child(void)
{
    if (uffd >= 0)
        real_close(uffd);
    uffd = -1;
    state = 0;
    n_ranges = 0;
    pthread_mutex_init(&ranges_lock, NULL);
}

#else /* no userfaultfd headers: every mapping waits in mmap */

void fault_init(void) {}
void *fault_map(void *addr, size_t length, int prot, int flags, int fd, int64_t offset,
                int object, bool *served_here)
{
    (void)addr, (void)length, (void)prot, (void)flags, (void)fd, (void)offset, (void)object;
    *served_here = false;
    return MAP_FAILED;
}
void fault_settle(const void *addr, size_t length) { (void)addr, (void)length; }
void fault_forget(const void *addr, size_t length) { (void)addr, (void)length; }
void fault_before_fork(void) {}
void fault_atfork_child(void) {}

#endif
