/* fixture.c: the hand-written session and the owner's part in the shim's tests (fixture.h).
 * Everything here runs in the process the shim is loaded into; its own files lie outside
 * MODEL_DIR (or are made before the session exists), so every hooked call it makes passes
 * through. */
#include "fixture.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <link.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/file.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "control_image.h"
#include "session_check.h"

#define ASK_LIMIT_MS 10000     /* a call that should block and ask has not, in this long */
#define READ_TIMEOUT_MS 15000  /* the header's: a wrongly blocked call ends in this long */

_Static_assert(FX_CHUNK == CONTROL_IMAGE_CHUNK, "the fixture's chunk is control_image.h's");

int fx_checks, fx_failed_checks;
static int skips; /* fx_skip calls: a whole test or a part of one */
static const char *current; /* the running test's name */

static struct {
    char base[PATH_MAX], model[PATH_MAX], real[PATH_MAX];
    char path[FX_OBJECTS][PATH_MAX], data[FX_OBJECTS][PATH_MAX];
    char small[PATH_MAX], outside[PATH_MAX], sibling[PATH_MAX];
    char session[OSSC_SESSION_PATH_MAX], data_dir[PATH_MAX], control[PATH_MAX];
    char shim_log[PATH_MAX], audit_log[PATH_MAX];
    fx_id placeholder[FX_OBJECTS], small_id;
    int control_fd;
    ossc_session_header *hdr;
} fx = {.control_fd = -1};

/* ---- checks and the test list ---- */

void fx_check_failed(const char *file, int line, const char *what)
{
    fx_failed_checks++;
    fprintf(stderr, "  %s:%d: check failed: %s\n", file, line, what);
}

void fx_skip(const char *reason)
{
    skips++;
    printf("SKIP %s: %s\n", current, reason);
}

#define MAX_TESTS 64
static struct {
    const char *name;
    fx_test_fn fn;
} tests[MAX_TESTS];
static int n_tests;

void fx_register(const char *name, fx_test_fn fn)
{
    if (n_tests == MAX_TESTS)
        abort();
    tests[n_tests].name = name;
    tests[n_tests++].fn = fn;
}

/* ---- paths and files ---- */

static void fail_setup(const char *what, const char *path)
{
    fprintf(stderr, "shim test setup: %s %s: %s\n", what, path, strerror(errno));
    exit(2);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* snprintf into a buffer of the fixture's, which is never too short for what it holds. */
__attribute__((format(printf, 3, 4))) static void put(char *buf, size_t cap, const char *fmt,
                                                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "shim test setup: a path is too long: %s\n", buf);
        exit(2);
    }
}
#define PUT(buf, ...) put(buf, sizeof(buf), __VA_ARGS__)

void fx_paths_init(void)
{
    const char *base = getenv("OSSC_SHIMTEST_BASE"), *model = getenv("MODEL_DIR");
    if (!base || !model) {
        fprintf(stderr, "shim test: OSSC_SHIMTEST_BASE and MODEL_DIR must be set\n");
        exit(2);
    }
    PUT(fx.base, "%s", base);
    PUT(fx.model, "%s", model);
    if (!realpath(fx.model, fx.real))
        fail_setup("realpath", fx.model);
    ossc_session_name(fx.session, sizeof(fx.session), OSSC_SESSION_ROOT, (unsigned)geteuid(),
                      OSSC_SESSION_PRIVATE, fx.real, 0);
    PUT(fx.data_dir, "%s/data", fx.session);
    PUT(fx.control, "%s/control", fx.session);
    for (int k = 0; k < FX_OBJECTS; k++) {
        PUT(fx.path[k], "%s/%s", fx.model, fx_name(k));
        PUT(fx.data[k], "%s/%d", fx.data_dir, k);
    }
    PUT(fx.small, "%s/config.json", fx.model);
    PUT(fx.outside, "%s/outside.bin", fx.base);
    PUT(fx.sibling, "%s/model2/%s", fx.base, fx_name(0));
    PUT(fx.shim_log, "%s/shim.log", fx.base);
    PUT(fx.audit_log, "%s/audit.log", fx.base);
}

const char *fx_base(void) { return fx.base; }
const char *fx_model_dir(void) { return fx.model; }
const char *fx_name(int k) { return control_image_objects[k].name; }
const char *fx_path(int k) { return fx.path[k]; }
const char *fx_data_path(int k) { return fx.data[k]; }
const char *fx_small(void) { return fx.small; }
const char *fx_outside(void) { return fx.outside; }
const char *fx_sibling(void) { return fx.sibling; }
const char *fx_session_dir(void) { return fx.session; }
const char *fx_shim_log(void) { return fx.shim_log; }
const char *fx_audit_log(void) { return fx.audit_log; }
uint64_t fx_size(int k) { return control_image_objects[k].size; }
uint32_t fx_chunks(int k) { return (uint32_t)((fx_size(k) + FX_CHUNK - 1) / FX_CHUNK); }

static uint32_t first_chunk(int k)
{
    uint32_t c = 0;
    for (int i = 0; i < k; i++)
        c += fx_chunks(i);
    return c;
}

fx_id fx_id_of_fd(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return (fx_id){0};
    return (fx_id){st.st_dev, st.st_ino, (unsigned long long)st.st_size, st.st_mode};
}

fx_id fx_id_of_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    fx_id id = fd >= 0 ? fx_id_of_fd(fd) : (fx_id){0};
    if (fd >= 0)
        close(fd);
    return id;
}

fx_id fx_placeholder(int k) { return fx.placeholder[k]; }
fx_id fx_small_id(void) { return fx.small_id; }

bool fx_same_file(fx_id a, fx_id b) { return a.ino && a.dev == b.dev && a.ino == b.ino; }

uint8_t fx_byte(int key, uint64_t i)
{
    uint32_t x = (uint32_t)i * 2654435761u + (uint32_t)(key + 1) * 40503u;
    x ^= x >> 15;
    return (uint8_t)(x | 1);
}

bool fx_bytes(int key, uint64_t off, const void *buf, size_t len)
{
    const uint8_t *b = buf;
    for (size_t i = 0; i < len; i++) {
        if (b[i] != fx_byte(key, off + i)) {
            fprintf(stderr, "  byte %llu of %s is %u, expected %u\n",
                    (unsigned long long)(off + i),
                    key == FX_OUTSIDE_KEY ? "the outside file" : fx_name(key), b[i],
                    fx_byte(key, off + i));
            return false;
        }
    }
    return true;
}

bool fx_zeros(const void *buf, size_t len)
{
    const uint8_t *b = buf;
    for (size_t i = 0; i < len; i++)
        if (b[i])
            return false;
    return true;
}

int fx_log_count(const char *path, const char *needle)
{
    static char text[1 << 16];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, text, sizeof(text) - 1);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    int count = 0;
    for (char *line = text; *line;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        count += strstr(line, needle) != NULL;
        if (!end)
            break;
        line = end + 1;
    }
    return count;
}

static void mkdirs(const char *path) /* the parents of path */
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s", path);
    for (char *s = p + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            fail_setup("mkdir", p);
        *s = '/';
    }
}

/* Creates path with size bytes: key's pattern, or a hole when key < 0. */
static fx_id make_file(const char *path, int key, uint64_t size, mode_t mode)
{
    mkdirs(path);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0)
        fail_setup("create", path);
    unsigned char buf[FX_CHUNK];
    for (uint64_t off = 0; key >= 0 && off < size; off += sizeof(buf)) {
        size_t n = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = fx_byte(key, off + i);
        if (pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
            fail_setup("write", path);
    }
    fx_id id = fx_id_of_fd(fd);
    close(fd);
    return id;
}

/* ---- the session ---- */

static ossc_session_object *object(int k)
{
    return (ossc_session_object *)((char *)fx.hdr + fx.hdr->objects_offset) + k;
}

static uint64_t *bits(void) { return (uint64_t *)((char *)fx.hdr + fx.hdr->bits_offset); }

static void bump_progress(void)
{
    __atomic_fetch_add(&fx.hdr->progress, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &fx.hdr->progress, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static void wake_readers(void) /* as the owner does after each change, alive */
{
    __atomic_store_n(&fx.hdr->heartbeat_ms, mono_ms(), __ATOMIC_RELAXED);
    bump_progress();
}

/* Placeholders (before the session exists: the shim passes their creation through), the
 * files around them, then the session directory as the owner publishes it. */
static void setup(void)
{
    fx_paths_init();
    for (int k = 0; k < FX_OBJECTS; k++)
        fx.placeholder[k] = make_file(fx.path[k], -1, fx_size(k), 0644);
    fx.small_id = make_file(fx.small, -1, 0, 0644);
    int fd = open(fx.small, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, FX_SMALL_TEXT, strlen(FX_SMALL_TEXT)) < 0)
        fail_setup("write", fx.small);
    close(fd);
    fx.small_id.size = strlen(FX_SMALL_TEXT);
    make_file(fx.outside, FX_OUTSIDE_KEY, FX_OUTSIDE_SIZE, 0644);
    make_file(fx.sibling, FX_OUTSIDE_KEY, FX_OUTSIDE_SIZE, 0644);

    if (mkdir(fx.session, 0700) != 0)
        fail_setup("mkdir", fx.session);
    if (mkdir(fx.data_dir, 0700) != 0)
        fail_setup("mkdir", fx.data_dir);
    char users[PATH_MAX];
    PUT(users, "%s/users", fx.session);
    make_file(users, -1, 0, 0600);
    for (int k = 0; k < FX_OBJECTS; k++)
        make_file(fx.data[k], -1, fx_size(k), 0600);

    static uint64_t image[4096]; /* 8-byte aligned, as a mapping is */
    size_t size = control_image_build(image, sizeof(image), FX_OBJECTS);
    ossc_session_header *h = (ossc_session_header *)image;
    h->owner_pid = (uint32_t)getpid();
    h->read_timeout_ms = READ_TIMEOUT_MS;
    h->heartbeat_ms = h->last_open_ms = mono_ms();
    h->expire_time_sec = 0;
    for (int k = 0; k < FX_OBJECTS; k++)
        h->bytes_total += fx_size(k);
    PUT(h->model_dir, "%s", fx.real);
    PUT(h->data_dir, "%s", fx.data_dir);
    PUT(h->audit_path, "%s", fx.audit_log);
    PUT(h->oss_path, "oss://shimtest/model/");
    const char *bad = size ? ossc_session_check(image, size) : "control_image_build failed";
    if (bad) {
        fprintf(stderr, "shim test setup: the control file is not valid: %s\n", bad);
        exit(2);
    }

    char tmp[PATH_MAX];
    PUT(tmp, "%s.new", fx.control);
    fx.control_fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fx.control_fd < 0 || flock(fx.control_fd, LOCK_EX) != 0 ||
        pwrite(fx.control_fd, image, size, 0) != (ssize_t)size)
        fail_setup("write", tmp);
    fx.hdr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fx.control_fd, 0);
    if (fx.hdr == MAP_FAILED || rename(tmp, fx.control) != 0)
        fail_setup("publish", fx.control);
}

void fx_reset(void)
{
    if (chdir(fx.base) != 0)
        fail_setup("chdir", fx.base);
    flock(fx.control_fd, LOCK_EX); /* again, after fx_owner_dies */
    ossc_session_header *h = fx.hdr;
    h->read_timeout_ms = READ_TIMEOUT_MS;
    __atomic_store_n(&h->state, OSSC_SESSION_FETCHING, __ATOMIC_RELEASE);
    for (uint32_t w = 0; w < (h->n_chunks + 63) / 64; w++)
        __atomic_store_n(&bits()[w], 0, __ATOMIC_RELEASE);
    for (int k = 0; k < FX_OBJECTS; k++) {
        __atomic_store_n(&object(k)->chunks_ready, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&object(k)->error, 0, __ATOMIC_RELEASE);
        int fd = open(fx.data[k], O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, 0) != 0 || ftruncate(fd, (off_t)fx_size(k)) != 0)
            fail_setup("reset", fx.data[k]);
        close(fd);
    }
    wake_readers();
}

void fx_land(int k, uint32_t chunk)
{
    uint64_t off = (uint64_t)chunk * FX_CHUNK;
    size_t n = fx_size(k) - off < FX_CHUNK ? (size_t)(fx_size(k) - off) : FX_CHUNK;
    unsigned char buf[FX_CHUNK];
    for (size_t i = 0; i < n; i++)
        buf[i] = fx_byte(k, off + i);
    int fd = open(fx.data[k], O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 ||
        ((uint64_t)st.st_size != fx_size(k) && ftruncate(fd, (off_t)fx_size(k)) != 0) ||
        pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
        fail_setup("land a chunk in", fx.data[k]);
    close(fd);
    uint32_t g = object(k)->first_chunk + chunk;
    uint64_t bit = 1ULL << (g % 64);
    if (!(__atomic_fetch_or(&bits()[g / 64], bit, __ATOMIC_RELEASE) & bit))
        __atomic_fetch_add(&object(k)->chunks_ready, 1, __ATOMIC_RELEASE);
    wake_readers();
}

void fx_land_all(int k)
{
    for (uint32_t c = 0; c < fx_chunks(k); c++)
        fx_land(k, c);
}

void fx_release(int k)
{
    uint32_t g = object(k)->first_chunk;
    __atomic_store_n(&object(k)->chunks_ready, 0, __ATOMIC_RELEASE);
    for (uint32_t c = 0; c < fx_chunks(k); c++, g++)
        __atomic_fetch_and(&bits()[g / 64], ~(1ULL << (g % 64)), __ATOMIC_RELEASE);
    if (unlink(fx.data[k]) != 0 && errno != ENOENT)
        fail_setup("unlink", fx.data[k]);
}

void fx_fail(int k, int error)
{
    __atomic_store_n(&object(k)->error, error, __ATOMIC_RELEASE);
    wake_readers();
}

void fx_state(uint32_t state)
{
    __atomic_store_n(&fx.hdr->state, state, __ATOMIC_RELEASE);
    wake_readers();
}

void fx_owner_dies(void)
{
    flock(fx.control_fd, LOCK_UN);
    __atomic_store_n(&fx.hdr->heartbeat_ms, 0, __ATOMIC_RELAXED);
    bump_progress();
}

void fx_read_timeout(uint32_t ms) { fx.hdr->read_timeout_ms = ms; }

uint32_t fx_wanted(void) { return __atomic_load_n(&fx.hdr->wanted, __ATOMIC_ACQUIRE); }

/* ---- requests nobody expected ----
 * Only a call between fx_start and fx_finish, or a child between fx_expect_waits(true) and
 * (false), may ask for a chunk. A request at any other time is a call that should not have
 * waited: the watchdog says so, fails the test, and makes the call return (EIO) instead of
 * hanging for the read timeout. */

static pthread_mutex_t expect_lock = PTHREAD_MUTEX_INITIALIZER;
static int expected;          /* calls and children that may wait now */
static uint32_t quiet_wanted; /* the request counter when the last of them ended */
static atomic_int stray;      /* unexpected requests, not yet counted as failed checks */

static int object_of_chunk(uint32_t chunk)
{
    for (int k = 0; k < FX_OBJECTS; k++)
        if (chunk >= first_chunk(k) && chunk < first_chunk(k) + fx_chunks(k))
            return k;
    return -1;
}

/* With expect_lock held. */
static void look_for_strays(void)
{
    uint32_t w = fx_wanted();
    if (expected || w == quiet_wanted)
        return;
    quiet_wanted = w;
    uint32_t chunk = __atomic_load_n(&fx.hdr->wanted_chunk, __ATOMIC_ACQUIRE);
    int k = object_of_chunk(chunk);
    fprintf(stderr, "  a call asked for global chunk %u (of %s) where none should wait; it "
            "gets EIO\n", chunk, k >= 0 ? fx_name(k) : "no object");
    atomic_fetch_add(&stray, 1);
    if (k >= 0)
        fx_fail(k, EIO);
}

static void *watchdog(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&expect_lock);
        look_for_strays();
        pthread_mutex_unlock(&expect_lock);
    }
    return NULL;
}

void fx_expect_waits(bool on)
{
    pthread_mutex_lock(&expect_lock);
    if (on)
        expected++;
    else if (--expected == 0)
        quiet_wanted = fx_wanted();
    pthread_mutex_unlock(&expect_lock);
}

/* The unexpected requests since the last call, counted as failed checks. */
static int strays(void)
{
    pthread_mutex_lock(&expect_lock);
    look_for_strays();
    pthread_mutex_unlock(&expect_lock);
    return atomic_exchange(&stray, 0);
}

/* ---- calls that wait ---- */

static void *call_main(void *arg)
{
    fx_call *c = arg;
    errno = 0;
    c->ret = c->fn(c);
    c->err = errno;
    atomic_store(&c->done, 1);
    return NULL;
}

void fx_start(fx_call *c)
{
    fx_expect_waits(true);
    c->seen = fx_wanted();
    c->asked = UINT32_MAX;
    atomic_store(&c->done, 0);
    if (pthread_create(&c->thread, NULL, call_main, c) != 0)
        fail_setup("pthread_create", "");
}

long fx_finish(fx_call *c)
{
    pthread_join(c->thread, NULL);
    fx_expect_waits(false);
    errno = c->err;
    return c->ret;
}

static long call_pread(fx_call *c) { return pread(c->fd, c->buf, c->len, (off_t)c->off); }

bool fx_fd_waits(int fd, int k, uint32_t chunk)
{
    fx_call c = {.fn = call_pread, .fd = fd, .len = 100, .off = (int64_t)chunk * FX_CHUNK};
    uint64_t left = fx_size(k) - (uint64_t)c.off;
    size_t want = left < c.len ? (size_t)left : c.len;
    fx_start(&c);
    bool asked = fx_asks(&c, k, chunk);
    fx_land(k, chunk);
    long n = fx_finish(&c);
    if (n != (long)want)
        fprintf(stderr, "  the read returned %ld (%s), expected %zu\n", n, strerror(c.err), want);
    return asked && n == (long)want && fx_bytes(k, (uint64_t)c.off, c.buf, want);
}

bool fx_reads_outside(int fd)
{
    static unsigned char buf[FX_OUTSIDE_SIZE];
    uint32_t w = fx_wanted();
    ssize_t n = pread(fd, buf, sizeof(buf), 0);
    if (n != (ssize_t)sizeof(buf))
        fprintf(stderr, "  the read of the outside file returned %zd (%s)\n", n, strerror(errno));
    return n == (ssize_t)sizeof(buf) && fx_bytes(FX_OUTSIDE_KEY, 0, buf, sizeof(buf)) &&
           fx_wanted() == w;
}

static bool thread_done(const void *ctx)
{
    return atomic_load(&((const fx_call *)ctx)->done);
}

static bool child_done(const void *ctx) /* and leaves it to be waited for */
{
    siginfo_t info = {0};
    pid_t pid = *(const pid_t *)ctx;
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == pid;
}

/* The wait for a request: *seen is the counter last seen, *asked the chunk last asked for. */
static bool await_ask(uint32_t *seen, uint32_t *asked, int k, uint32_t chunk,
                      bool (*done)(const void *), const void *ctx, const char *who)
{
    uint32_t want = first_chunk(k) + chunk;
    uint64_t deadline = mono_ms() + ASK_LIMIT_MS;
    for (;;) {
        uint32_t w = __atomic_load_n(&fx.hdr->wanted, __ATOMIC_ACQUIRE);
        if (w != *seen) {
            *seen = w;
            uint32_t got = __atomic_load_n(&fx.hdr->wanted_chunk, __ATOMIC_ACQUIRE);
            if (got == want) {
                *asked = want;
                if (done(ctx)) {
                    fprintf(stderr, "  the %s returned while chunk %u of %s was missing\n",
                            who, chunk, fx_name(k));
                    return false;
                }
                return true;
            }
            if (got != *asked) {
                fprintf(stderr, "  the %s asked for global chunk %u, expected %u (chunk %u of "
                        "%s)\n", who, got, want, chunk, fx_name(k));
                return false;
            }
            continue; /* the previous request, repeated */
        }
        if (done(ctx)) {
            fprintf(stderr, "  the %s returned without asking for chunk %u of %s\n", who, chunk,
                    fx_name(k));
            return false;
        }
        if (mono_ms() > deadline) {
            fprintf(stderr, "  the %s did not ask for chunk %u of %s in %d ms\n", who, chunk,
                    fx_name(k), ASK_LIMIT_MS);
            return false;
        }
        struct timespec ts = {0, 20 * 1000000L}; /* to look at done() now and then */
        syscall(SYS_futex, &fx.hdr->wanted, FUTEX_WAIT, w, &ts, NULL, 0);
    }
}

bool fx_asks(fx_call *c, int k, uint32_t chunk)
{
    return await_ask(&c->seen, &c->asked, k, chunk, thread_done, c, "call");
}

bool fx_child_asks(pid_t pid, uint32_t *seen, int k, uint32_t chunk)
{
    uint32_t asked = first_chunk(k) + chunk;
    return await_ask(seen, &asked, k, chunk, child_done, &pid, "child");
}

/* ---- the shim, the driver and the run ---- */

static int find_shim(struct dl_phdr_info *info, size_t size, void *out)
{
    (void)size;
    if (info->dlpi_name && strstr(info->dlpi_name, "libossc_preload")) {
        snprintf(out, PATH_MAX, "%s", info->dlpi_name);
        return 1;
    }
    return 0;
}

static const char *shim_path(void)
{
    static char path[PATH_MAX];
    if (!path[0])
        dl_iterate_phdr(find_shim, path);
    return path[0] ? path : NULL;
}

/* For a test named after a hook: whether this program's calls of that name reach the shim
 * (NULL), else what they reach. */
static const char *bound_elsewhere(const char *name)
{
    void *shim = dlopen(shim_path(), RTLD_NOW | RTLD_NOLOAD);
    void *hook = shim ? dlsym(shim, name) : NULL;
    Dl_info info;
    if (shim)
        dlclose(shim);
    if (!hook || !dladdr(hook, &info) || !info.dli_fname ||
        !strstr(info.dli_fname, "libossc_preload"))
        return NULL; /* not a hook: fork, exec */
    void *bound = dlsym(RTLD_DEFAULT, name);
    if (bound == hook)
        return NULL;
    return bound && dladdr(bound, &info) && info.dli_fname ? info.dli_fname : "nothing";
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)ftw;
    return (type == FTW_DP ? rmdir(path) : unlink(path)) != 0 && errno != ENOENT;
}

static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) == 0 && nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "shim test: could not remove all of %s\n", path);
}

static void print_file(const char *path, const char *prefix)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    while (f && fgets(line, sizeof(line), f))
        fprintf(stderr, "%s%s", prefix, line);
    if (f)
        fclose(f);
}

static volatile sig_atomic_t stop_signal;
static void on_stop(int sig) { stop_signal = sig; }

/* A fresh MODEL_DIR, this program again with it, and everything removed afterwards (also
 * when the driver is told to stop: SIGTERM, SIGINT, SIGHUP). */
static int drive(char **argv)
{
    char base[] = "/tmp/ossc-shimtest-XXXXXX", model[PATH_MAX], log[PATH_MAX];
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(model, sizeof(model), "%s/model", base);
    snprintf(log, sizeof(log), "%s/shim.log", base);
    int status = 0;
    struct sigaction stop = {.sa_handler = on_stop}; /* no SA_RESTART: waitpid returns */
    sigaction(SIGTERM, &stop, NULL);
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGHUP, &stop, NULL);
    pid_t pid = mkdir(model, 0755) == 0 ? fork() : -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a driver killed outright takes the run along */
        setenv("OSSC_SHIMTEST_BASE", base, 1);
        setenv("MODEL_DIR", model, 1);
        setenv("OSSC_LOG_PATH", log, 1);
        unsetenv("OSSC_DISABLE");
        unsetenv("ENABLE_CONNECTOR"); /* that would start a real owner */
        close_range(3, ~0U, 0);        /* fd numbers the tests can predict */
        execv("/proc/self/exe", argv);
        perror("exec /proc/self/exe");
        _exit(127);
    }
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
        if (stop_signal)
            kill(pid, SIGKILL);
    int rc = pid < 0 ? 2 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (pid > 0 && WIFSIGNALED(status))
        fprintf(stderr, "the tests were killed by signal %d\n", WTERMSIG(status));
    if (rc != 0)
        print_file(log, "shim log: ");
    char real[PATH_MAX], session[OSSC_SESSION_PATH_MAX];
    if (realpath(model, real)) {
        ossc_session_name(session, sizeof(session), OSSC_SESSION_ROOT, (unsigned)geteuid(),
                          OSSC_SESSION_PRIVATE, real, 0);
        remove_tree(session);
    }
    remove_tree(base);
    return rc;
}

static int run(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0); /* children of fork() must not print it again */
    if (!shim_path()) {
        fprintf(stderr, "libossc_preload.so is not loaded: run with LD_PRELOAD set to it "
                        "(ctest does)\n");
        return 2;
    }
    setup();
    pthread_t dog;
    if (pthread_create(&dog, NULL, watchdog, NULL) != 0 || pthread_detach(dog) != 0)
        fail_setup("start the watchdog", "");
    int passed = 0, failed = 0;
    int n = argc > 1 ? argc - 1 : n_tests;
    for (int i = 0; i < n; i++) {
        const char *name = argc > 1 ? argv[i + 1] : tests[i].name;
        int t = 0;
        while (t < n_tests && strcmp(tests[t].name, name) != 0)
            t++;
        if (t == n_tests) {
            printf("FAIL %s: no SHIM_TEST(%s) in this program (every line of hooks.def needs "
                   "one under preload/tests/shim/)\n", name, name);
            failed++;
            continue;
        }
        const char *elsewhere = bound_elsewhere(name);
        if (elsewhere) {
            printf("FAIL %s: the program's calls of %s reach %s, not the shim\n", name, name,
                   elsewhere);
            failed++;
            continue;
        }
        fx_reset();
        int before = fx_failed_checks, checks = fx_checks;
        current = name;
        tests[t].fn();
        int unexpected = strays(); /* each a check that failed */
        fx_checks += unexpected;
        fx_failed_checks += unexpected;
        if (fx_failed_checks > before) {
            printf("FAIL %s (%d of %d checks failed)\n", name, fx_failed_checks - before,
                   fx_checks - checks);
            failed++;
        } else if (fx_checks == checks) {
            /* skipped whole: said so already */
        } else {
            printf("ok   %s (%d checks)\n", name, fx_checks - checks);
            passed++;
        }
    }
    printf("%d passed, %d failed, %d skipped (%d checks)\n", passed, failed, skips, fx_checks);
    return failed ? 1 : 0;
}

int fx_main(int argc, char **argv)
{
    return getenv("OSSC_SHIMTEST_BASE") ? run(argc, argv) : drive(argv);
}
