/* init.c: the shim's configuration from the environment, its log, and, in a process started
 * with ENABLE_CONNECTOR=1, the session before main() runs: attached if it is served already,
 * else served by an ossc-owner started for it (libossc never loads into the application). */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

#include "exit_codes.h"
#include "log_line.h"
#include "session_group.h"
#include "shim.h"

shim_config shim = {.group = OSSC_SESSION_PRIVATE};
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

int shim_open_log(const char *path)
{
    static char refused[PATH_MAX]; /* said once per process, though tried again on attach */
    int fd = real_open(path, OSSC_LOG_OPEN_FLAGS, OSSC_LOG_MODE);
    struct stat st; /* a symlink in a sticky directory may fail as EACCES, not ELOOP */
    if (fd >= 0 || strcmp(refused, path) == 0 ||
        !(errno == ELOOP || (real_fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                             S_ISLNK(st.st_mode))))
        return fd;
    snprintf(refused, sizeof(refused), "%s", path);
    /* to stderr: the log this was may be the one refused */
    char line[PATH_MAX + 128];
    int n = snprintf(line, sizeof(line), "ossc[%d] WARN cannot open log file %s: it is a "
                     "symbolic link, which ossc does not follow\n", (int)getpid(), path);
    ssize_t w = n > 0 ? write(2, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1)
                      : 0;
    (void)w;
    return -1;
}

/* The session's logPath (from the owner's settings), unless OSSC_LOG_PATH chose already. */
void shim_log_to(const char *path)
{
    if (log_fd != 2 || !path[0])
        return;
    int fd = shim_open_log(path);
    if (fd >= 0)
        log_fd = fd;
}

/* Whether the session serves url (trailing slashes aside; the owner decides the rest). */
static bool serves(const char *served, const char *url)
{
    size_t a = strlen(served), b = strlen(url);
    while (a && served[a - 1] == '/')
        a--;
    while (b && url[b - 1] == '/')
        b--;
    return a == b && strncmp(served, url, a) == 0;
}

/* An LD_PRELOAD entry that names this library. */
static bool is_us(const char *entry, size_t len, const char *self)
{
    static const char name[] = "libossc_preload.so";
    return (len == strlen(self) && strncmp(entry, self, len) == 0) ||
           (len >= sizeof(name) - 1 && strncmp(entry + len - (sizeof(name) - 1), name,
                                               sizeof(name) - 1) == 0);
}

/* Runs ossc-owner (next to this library, or OSSC_OWNER) and returns its exit code: 0 once
 * the session is published or found live. It gets our environment (credentials travel
 * there, never on its command line) without ENABLE_CONNECTOR and without this shim. */
static int run_owner(const shim_mount *mount)
{
    char owner[PATH_MAX], self[PATH_MAX] = "";
    const char *override = getenv("OSSC_OWNER");
    Dl_info info;
    if (dladdr((void *)run_owner, &info) && info.dli_fname)
        snprintf(self, sizeof(self), "%s", info.dli_fname);
    if (override && *override) {
        snprintf(owner, sizeof(owner), "%s", override);
    } else {
        char here[PATH_MAX];
        snprintf(here, sizeof(here), "%s", self[0] ? self : "./x");
        snprintf(owner, sizeof(owner), "%s/ossc-owner", dirname(here));
    }
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = malloc((n + 1) * sizeof(*envp));
    char *preload = NULL;
    if (!envp)
        return OSSC_EXIT_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], "ENABLE_CONNECTOR=", 17) == 0)
            continue;
        if (strncmp(environ[i], "LD_PRELOAD=", 11) == 0) {
            const char *v = environ[i] + 11;
            size_t cap = strlen(environ[i]) + 1;
            if (!(preload = malloc(cap)))
                continue;
            size_t m = (size_t)snprintf(preload, cap, "LD_PRELOAD=");
            while (*v) {
                size_t len = strcspn(v, " :");
                if (len && !is_us(v, len, self))
                    m += (size_t)snprintf(preload + m, cap - m, "%s%.*s", m > 11 ? " " : "",
                                          (int)len, v);
                v += len + (v[len] != '\0');
            }
            envp[k++] = preload;
            continue;
        }
        envp[k++] = environ[i];
    }
    envp[k] = NULL;
    /* The group is the environment's, as ours is: not a config file's that we cannot see. */
    const char *group = getenv("OSSC_SHARED_GROUP");
    char group_set[128], policy_set[64];
    snprintf(group_set, sizeof(group_set), "sharedGroup=%s", group ? group : "");
    snprintf(policy_set, sizeof(policy_set), "prefetch.policy=%s", mount->policy);
    char *argv[] = {owner, "--oss-path", (char *)mount->url, "--model-dir",
                    (char *)mount->model_dir, "--set", group_set, "--prog", "ossc",
                    mount->policy[0] ? "--set" : NULL, policy_set, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, owner, NULL, NULL, argv, envp);
    free(preload);
    free(envp);
    if (rc != 0) {
        shim_log("ERROR", "cannot run the session owner %s: %s (set OSSC_OWNER)", owner,
                 strerror(rc));
        return OSSC_EXIT_IO;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return 0; /* SIGCHLD ignored: reaped for us; attaching tells */
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* OSSC_SHARED_GROUP (a name or a gid): the group whose sessions this process may attach to
 * read-only, and with which the owner it starts shares; unset for private sessions. */
static long shared_group(void)
{
    const char *name = getenv("OSSC_SHARED_GROUP");
    long gid;
    if (!name || ossc_session_group(name, &gid) == 0)
        return name ? gid : OSSC_SESSION_PRIVATE;
    shim_log("WARN", "OSSC_SHARED_GROUP: no group named '%s'; only private sessions", name);
    return OSSC_SESSION_PRIVATE;
}

/* ENABLE_CONNECTOR=1: attach to the session serving a mount's MODEL_DIR, starting its
 * owner first if there is none. Processes this one execs or starts carry the variable and
 * attach too. */
static void ensure_session(int i)
{
    shim_mount *m = &shim.mounts[i];
    if (!m->url[0]) {
        shim_log("ERROR", "ENABLE_CONNECTOR=1 needs OSS_PATH (oss://bucket/prefix/)");
        _exit(OSSC_EXIT_CONFIG);
    }
    /* A session is used only while its owner lives: a dead owner's stays until its last user
     * lets go, and attaching to it would fail every read of a missing range. */
    for (int attempt = 0;; attempt++) {
        const char *served = session_attach(i) ? session_oss_path(i) : NULL;
        if (served && serves(served, m->url) && session_owner_lives(i))
            goto attached;
        session_detach(i); /* a dead owner's: the new owner takes its directory over */
        if (attempt == 3)
            break;
        int rc = run_owner(m); /* the owner says why, on our stderr */
        if (rc)
            _exit(rc);
    }
    shim_log("ERROR", "the session for %s ended each time it was attached", m->model_dir);
    _exit(OSSC_EXIT_IO);
attached:;
    char real[PATH_MAX];
    if (!m->real_dir_len && realpath(m->model_dir, real) && strcmp(real, m->model_dir) != 0) {
        snprintf(m->real_dir, sizeof(m->real_dir), "%s", real); /* it exists only now */
        m->real_dir_len = strlen(m->real_dir);
    }
}

/* A mount: dir (absolute, at most len bytes of it), served from url. False if unusable. */
static bool add_mount(const char *url, size_t url_len, const char *dir, size_t len,
                      const char *policy)
{
    if (shim.n_mounts == SHIM_MOUNTS_MAX || dir[0] != '/' || len >= OSSC_MODEL_DIR_MAX ||
        url_len >= sizeof(shim.mounts[0].url))
        return false;
    shim_mount *m = &shim.mounts[shim.n_mounts];
    snprintf(m->model_dir, sizeof(m->model_dir), "%.*s", (int)len, dir);
    while (len > 1 && m->model_dir[len - 1] == '/')
        m->model_dir[--len] = '\0';
    m->model_dir_len = len;
    for (int k = 0; k < shim.n_mounts; k++)
        if (strcmp(shim.mounts[k].model_dir, m->model_dir) == 0)
            return true; /* MODEL_DIR named again in OSSC_MOUNTS */
    snprintf(m->url, sizeof(m->url), "%.*s", (int)url_len, url);
    snprintf(m->policy, sizeof(m->policy), "%s", policy);
    char real[PATH_MAX];
    if (realpath(m->model_dir, real) && strcmp(real, m->model_dir) != 0) {
        snprintf(m->real_dir, sizeof(m->real_dir), "%s", real);
        m->real_dir_len = strlen(m->real_dir);
    }
    shim.n_mounts++;
    return true;
}

/* OSSC_MOUNTS: mounts separated by spaces (or newlines), each URL=DIR with an optional
 * ":lazy" or ":eager" after DIR, e.g. "oss://b/base/=/models/base oss://b/loras/=/models/
 * loras:lazy". DIR starts at the first "=/". */
static void add_mounts(const char *list)
{
    for (const char *p = list; *p;) {
        p += strspn(p, " \t\n");
        size_t n = strcspn(p, " \t\n");
        if (!n)
            break;
        const char *eq = memmem(p, n, "=/", 2);
        size_t dir_len = eq ? n - (size_t)(eq + 1 - p) : 0;
        const char *policy = "";
        if (eq && dir_len > 5 && memcmp(eq + 1 + dir_len - 5, ":lazy", 5) == 0)
            policy = "lazy", dir_len -= 5;
        else if (eq && dir_len > 6 && memcmp(eq + 1 + dir_len - 6, ":eager", 6) == 0)
            policy = "eager", dir_len -= 6;
        if (!eq || eq == p || !add_mount(p, (size_t)(eq - p), eq + 1, dir_len, policy))
            shim_log("WARN", "OSSC_MOUNTS: ignoring '%.*s' (expected URL=/absolute/dir[:lazy], "
                     "at most %d mounts)", (int)n, p, SHIM_MOUNTS_MAX);
        p += n;
    }
}

/* Whether one mount's directory lies inside another's: a path below both would be looked up
 * in one session only, and the other's placeholders read as they are (zeros). */
static bool mounts_overlap(const shim_mount **outer, const shim_mount **inner)
{
    for (int i = 0; i < shim.n_mounts; i++)
        for (int k = 0; k < shim.n_mounts; k++) {
            const shim_mount *a = &shim.mounts[i], *b = &shim.mounts[k];
            if (i != k && (a->model_dir_len == 1 ||
                           (strncmp(b->model_dir, a->model_dir, a->model_dir_len) == 0 &&
                            b->model_dir[a->model_dir_len] == '/'))) {
                *outer = a;
                *inner = b;
                return true;
            }
        }
    return false;
}

__attribute__((constructor)) void shim_init(void)
{
    if (shim_ready)
        return;
    shim_ready = 1;
    real_resolve();
    const char *log_path = getenv("OSSC_LOG_PATH");
    if (log_path && *log_path) {
        int fd = shim_open_log(log_path);
        if (fd >= 0)
            log_fd = fd;
    }
    const char *dir = getenv("MODEL_DIR");
    const char *url = getenv("OSS_PATH");
    const char *list = getenv("OSSC_MOUNTS");
    const char *disable = getenv("OSSC_DISABLE");
    if (!(disable && strcmp(disable, "0") != 0 && *disable)) {
        if (dir && dir[0] == '/')
            add_mount(url ? url : "", url ? strlen(url) : 0, dir, strlen(dir), "");
        if (list)
            add_mounts(list);
    }
    const shim_mount *outer, *inner;
    if (mounts_overlap(&outer, &inner)) {
        shim_log("ERROR", "mount directories overlap: %s is inside %s (MODEL_DIR, "
                 "OSSC_MOUNTS); give each mount a directory of its own", inner->model_dir,
                 outer->model_dir);
        _exit(OSSC_EXIT_CONFIG);
    }
    if (shim.n_mounts) {
        shim.enabled = true;
        shim.group = shared_group();
        shim_ready = 2;
        const char *owner = getenv("ENABLE_CONNECTOR");
        for (int i = 0; owner && strcmp(owner, "1") == 0 && i < shim.n_mounts; i++)
            ensure_session(i);
    }
    if (dir && dir[0] != '/' && *dir) {
        shim_log("WARN", "MODEL_DIR '%s' is not absolute; the shim passes everything through",
                 dir);
    }
    pin_init();
    pthread_atfork(NULL, NULL, session_atfork_child);
    pthread_atfork(NULL, NULL, pin_atfork_child);
    shim_ready = 2;
}
