/* fixture.h: a session written by hand for the shim's tests, one small program per family of
 * hooks.def (shim_<family>.c), each run under LD_PRELOAD=libossc_preload.so as libfaketime's
 * test snippets are.
 *
 * A program started without OSSC_SHIMTEST_BASE is the driver: it makes a fresh MODEL_DIR
 * (mkdtemp), runs itself again with MODEL_DIR set (the shim reads it before main), and removes
 * the session directory and MODEL_DIR afterwards, whatever became of the run. The run writes
 * the session the shim attaches to (control_image.h's three objects, the control file laid
 * out as the owner's publish() does, data files, placeholders) and plays the owner itself: it
 * holds LOCK_EX on the control file, lands chunks (bytes first, then the ready bit, then a
 * progress wake-up), records errors and states. A call that must wait runs in a thread (or
 * a child process); the test waits for the event that says it blocked (the reader bumps
 * `wanted` asking for its chunk), checks that it has not returned, then lands the chunk.
 * Order comes from events only; time only bounds how long a failing check takes (10 s for a
 * request that never comes; a request nobody expected is answered with EIO within 20 ms).
 *
 * Byte i of object k is fx_byte(k, i), never 0, so a hole read in place of the bytes shows.
 */
#ifndef OSSC_SHIM_FIXTURE_H
#define OSSC_SHIM_FIXTURE_H

#if defined(_FILE_OFFSET_BITS) && _FILE_OFFSET_BITS == 64
#error "the shim tests call open and open64 (stat and stat64, ...) by their own names"
#endif

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "session_layout.h"

#define FX_OBJECTS 3       /* control_image.h's: 4 chunks (the last 1 byte), 2 chunks, 10 bytes */
#define FX_CHUNK 4096u     /* CONTROL_IMAGE_CHUNK */
#define FX_OUTSIDE_KEY 99  /* the pattern of the files outside MODEL_DIR */
#define FX_OUTSIDE_SIZE (3 * FX_CHUNK)
#define FX_SMALL_TEXT "{\"small\": \"a file the owner downloaded whole\"}\n"

/* ---- checks: a failed one prints where and what, and fails the test it is in ---- */
extern int fx_checks, fx_failed_checks;
void fx_check_failed(const char *file, int line, const char *what);
#define CHECK(cond)                                          \
    do {                                                     \
        fx_checks++;                                         \
        if (!(cond))                                         \
            fx_check_failed(__FILE__, __LINE__, #cond);      \
    } while (0)
/* expr fails (-1) with errno e. */
#define CHECK_ERRNO(expr, e)                                                            \
    do {                                                                                \
        errno = 0;                                                                      \
        long r_ = (long)(expr);                                                         \
        int e_ = errno;                                                                 \
        fx_checks++;                                                                    \
        if (r_ != -1 || e_ != (e)) {                                                    \
            char what_[256];                                                            \
            snprintf(what_, sizeof(what_), "%s returned %ld, errno %d (%s); expected "  \
                     "-1, errno %d (%s)", #expr, r_, e_, strerror(e_), (int)(e),        \
                     strerror(e));                                                      \
            fx_check_failed(__FILE__, __LINE__, what_);                                 \
        }                                                                               \
    } while (0)
/* Says that the running test skips a part, or all of itself ("SKIP name: reason"); the
 * test goes on or returns. A test that ran no check is not counted as passed. */
void fx_skip(const char *reason);

/* ---- tests: SHIM_TEST(name) { ... }, at the start of a line, registers a test under the
 * name of the hook it calls (or of what it checks: fork, exec). CMakeLists.txt makes a CTest
 * test shim.<name> of each, and a failing one for a line of hooks.def without its test. ---- */
typedef void (*fx_test_fn)(void);
void fx_register(const char *name, fx_test_fn fn);
#define SHIM_TEST(name)                                                              \
    static void test_##name(void);                                                   \
    __attribute__((constructor)) static void register_##name(void)                   \
    {                                                                                \
        fx_register(#name, test_##name);                                             \
    }                                                                                \
    static void test_##name(void)

/* The program's main: the driver, or the run of the tests named in argv (all without). */
int fx_main(int argc, char **argv);
/* In a run: the paths without the session (a process the run exec'd). */
void fx_paths_init(void);

/* ---- the files ---- */
const char *fx_base(void);           /* the temporary directory holding everything below */
const char *fx_model_dir(void);      /* MODEL_DIR: <base>/model */
const char *fx_name(int k);          /* object k's name below MODEL_DIR */
const char *fx_path(int k);          /* MODEL_DIR/<name> */
const char *fx_data_path(int k);     /* its data file in the session */
const char *fx_small(void);          /* MODEL_DIR/config.json: not an object */
const char *fx_outside(void);        /* <base>/outside.bin, FX_OUTSIDE_KEY's pattern */
const char *fx_sibling(void);        /* <base>/model2/<object 0's name>: MODEL_DIR's prefix */
const char *fx_session_dir(void);
const char *fx_shim_log(void);       /* OSSC_LOG_PATH */
const char *fx_audit_log(void);      /* the header's audit_path */
uint64_t fx_size(int k);
uint32_t fx_chunks(int k);

/* A file's identity and size as stat(2) tells them. */
typedef struct fx_id {
    unsigned long long dev, ino, size;
    unsigned mode;
} fx_id;
fx_id fx_id_of_path(const char *path);  /* stat outside MODEL_DIR; {0} if it fails */
fx_id fx_id_of_fd(int fd);
fx_id fx_placeholder(int k);            /* the placeholder as created, before the session */
fx_id fx_small_id(void);
bool fx_same_file(fx_id a, fx_id b);

/* ---- bytes ---- */
uint8_t fx_byte(int key, uint64_t i);
/* Whether buf holds key's bytes [off, off+len); prints the first difference. */
bool fx_bytes(int key, uint64_t off, const void *buf, size_t len);
bool fx_zeros(const void *buf, size_t len);
/* Lines of a log file that contain needle. */
int fx_log_count(const char *path, const char *needle);

/* ---- the owner's part ---- */
/* Every object present in its data file as a hole, no ready bit, no error, FETCHING, the
 * owner alive (LOCK_EX held, heartbeat now). Run before every test. */
void fx_reset(void);
void fx_land(int k, uint32_t chunk);             /* its bytes, its bit, a wake-up */
void fx_land_all(int k);
void fx_release(int k);                          /* bits cleared, data file unlinked */
void fx_fail(int k, int error);                  /* the object's errno, a wake-up */
void fx_state(uint32_t state);
void fx_owner_dies(void);                        /* unlock, heartbeat long past */
void fx_read_timeout(uint32_t ms);
uint32_t fx_wanted(void);                        /* the readers' request counter */

/* ---- a call that must wait, run in a thread ---- */
typedef struct fx_call fx_call;
struct fx_call {
    long (*fn)(fx_call *c); /* the call; its result and errno are kept */
    int fd;
    size_t len;
    int64_t off;
    int flags;
    const char *path;
    const void *ctx;
    void *ptr;
    unsigned char buf[5 * FX_CHUNK];
    /* filled in */
    long ret;
    int err;
    atomic_int done;
    uint32_t seen, asked; /* the wanted counter last seen, the chunk last asked for */
    pthread_t thread;
};
void fx_start(fx_call *c);
/* Whether the call is blocked asking for chunk `chunk` of object k: waits for the event (its
 * request), then checks that it has not returned. A repeat of its previous request is
 * skipped; another chunk, a return, or 10 s without a request fail the check. */
bool fx_asks(fx_call *c, int k, uint32_t chunk);
long fx_finish(fx_call *c); /* joins; errno is the call's */

/* Whether fd is object k's and waits: a pread at the start of chunk `chunk` (missing) asks
 * for it, and returns the object's bytes once it landed (prints what went wrong). */
bool fx_fd_waits(int fd, int k, uint32_t chunk);

/* Says that a child process may now ask for chunks (true) or no longer can (false, once
 * it was waited for). fx_start and fx_finish say it for their call. A request at any other
 * time fails the test and is answered with EIO. */
void fx_expect_waits(bool on);

/* Whether fd reads the whole outside file at once, without a request: not an fd of ours
 * (where the objects' first chunks are missing, one of ours would wait). */
bool fx_reads_outside(int fd);

/* The same for another process (a forked or exec'd child), seen through the shared control
 * file; the child is left to be waited for. */
bool fx_child_asks(pid_t pid, uint32_t *seen, int k, uint32_t chunk);

#endif
