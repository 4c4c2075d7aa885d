/* init.c: the shim's configuration from the environment, its log, and, in the process started
 * with ENABLE_CONNECTOR=1, the owner: libossc is loaded (only there) and starts the session
 * before main() runs. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log_line.h"
#include "shim.h"

shim_config shim;
volatile int shim_ready;
static int log_fd = 2;

void shim_log(const char *level, const char *fmt, ...)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "ossc[%d] %s ", (int)getpid(), level);
    va_list ap;
    va_start(ap, fmt);
    log_line_write(log_fd, line, sizeof(line), n, fmt, ap);
    va_end(ap);
}

/* The session's logPath (from the owner's settings), unless OSSC_LOG_PATH chose already. */
void shim_log_to(const char *path)
{
    if (log_fd != 2 || !path[0])
        return;
    int fd = real_open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0)
        log_fd = fd;
}

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

/* The engine's API, as far as the owner needs it (the shim never includes ossc.h: it must
 * not depend on libossc at link time). */
typedef struct {
    int code, http_status, sys_errno;
    char server_code[64], message[512];
} engine_error;
typedef void *(*session_start_fn)(const char *, const char *, const char *const *, size_t,
                                  engine_error *);
typedef void (*session_stop_fn)(void *, int);

/* The session this process owns (env-var mode), removed when the process exits. */
static void *owned_session;
static session_stop_fn owned_session_stop;
static pid_t owner_pid;

/* Exit codes as the ossc command uses them, so a wrapper script can tell failures apart. */
static int exit_code_for(int status)
{
    static const int codes[] = {0, 3, 4, 5, 6, 7, 8, 9, 10, 130, 12, 11};
    return status > 0 && status < (int)(sizeof(codes) / sizeof(codes[0])) ? codes[status] : 1;
}

static void start_owner(void)
{
    const char *url = getenv("OSS_PATH");
    if (!url || !*url) {
        shim_log("ERROR", "ENABLE_CONNECTOR=1 needs OSS_PATH (oss://bucket/prefix/)");
        _exit(3);
    }
    char lib[PATH_MAX];
    const char *override = getenv("OSSC_LIBOSSC");
    Dl_info self;
    if (override && *override) {
        snprintf(lib, sizeof(lib), "%s", override);
    } else if (dladdr((void *)start_owner, &self) && self.dli_fname) {
        char here[PATH_MAX];
        snprintf(here, sizeof(here), "%s", self.dli_fname);
        snprintf(lib, sizeof(lib), "%s/libossc.so", dirname(here));
    } else {
        snprintf(lib, sizeof(lib), "libossc.so");
    }
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    session_start_fn start = h ? (session_start_fn)dlsym(h, "ossc_session_start") : NULL;
    if (!start) {
        shim_log("ERROR", "cannot load the fetch engine %s: %s (set OSSC_LIBOSSC)", lib,
                 dlerror());
        _exit(3);
    }
    engine_error err;
    memset(&err, 0, sizeof(err));
    owned_session_stop = (session_stop_fn)dlsym(h, "ossc_session_stop");
    if (!(owned_session = start(url, shim.model_dir, NULL, 0, &err))) {
        shim_log("ERROR", "%s", err.message);
        _exit(exit_code_for(err.code));
    }
    owner_pid = getpid();
    /* Children (vLLM's engine and workers) attach; they must not own too. */
    unsetenv("ENABLE_CONNECTOR");
}

__attribute__((constructor)) void shim_init(void)
{
    if (shim_ready)
        return;
    shim_ready = 1;
    real_resolve();
    const char *log_path = getenv("OSSC_LOG_PATH");
    if (log_path && *log_path) {
        int fd = real_open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0)
            log_fd = fd;
    }
    const char *dir = getenv("MODEL_DIR");
    const char *disable = getenv("OSSC_DISABLE");
    if (dir && dir[0] == '/' && strlen(dir) < sizeof(shim.model_dir) &&
        !(disable && strcmp(disable, "0") != 0 && *disable)) {
        snprintf(shim.model_dir, sizeof(shim.model_dir), "%s", dir);
        size_t n = strlen(shim.model_dir);
        while (n > 1 && shim.model_dir[n - 1] == '/')
            shim.model_dir[--n] = '\0';
        shim.model_dir_len = n;
        const char *owner = getenv("ENABLE_CONNECTOR");
        if (owner && strcmp(owner, "1") == 0)
            start_owner();
        char real[PATH_MAX];
        const char *key = realpath(shim.model_dir, real) ? real : shim.model_dir;
        if (strcmp(key, shim.model_dir) != 0) {
            snprintf(shim.real_dir, sizeof(shim.real_dir), "%s", key);
            shim.real_dir_len = strlen(shim.real_dir);
        }
        snprintf(shim.session_dir, sizeof(shim.session_dir),
                 OSSC_SESSION_ROOT "/" OSSC_SESSION_PREFIX "%016llx",
                 (unsigned long long)fnv1a64(key));
        shim.enabled = true;
    } else if (dir && dir[0] != '/' && *dir) {
        shim_log("WARN", "MODEL_DIR '%s' is not absolute; the shim passes everything through",
                 dir);
    }
    pthread_atfork(NULL, NULL, session_atfork_child);
    shim_ready = 2;
}

/* The owner's exit ends the session: /dev/shm is freed (fds and mappings others still hold
 * keep their pages). Only in the owner itself: a forked child that exits has no fetch
 * threads to stop and must not end its parent's session. */
__attribute__((destructor)) static void shim_fini(void)
{
    if (owned_session && owned_session_stop && getpid() == owner_pid)
        owned_session_stop(owned_session, 1);
}
