/* session_budget.c: how much of a session the owner keeps in its cache. At start: whether an
 * eager prefetch fits the cache's free space (refused in one line if not and there is no
 * cacheLimit), cacheLimit in bytes, and how much of the ordered prefix is prefetched (all
 * of it eagerly, up to the limit, or nothing when lazy). While serving: the bytes held kept
 * under cacheLimit by releasing whole objects that no process has open or mapped (the /proc
 * fd and maps tables of the processes attached to the session say which), least recently
 * opened first. Releasing never changes the bytes of a file: it is unlinked, and whoever
 * still holds it keeps its pages. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "session.h"

/* While over cacheLimit, how often the attached processes are looked at again without an
 * event: reading a process's maps takes its mmap lock, so not at every heartbeat. */
#define BUDGET_RESCAN_MS 1000

/* Where the data files will go, or its deepest ancestor that exists already. */
static int cache_fs(const ossc_session *s, struct statvfs *st, char *where, size_t cap)
{
    snprintf(where, cap, "%s", *s->client->s.cache_dir ? s->client->s.cache_dir
                                                       : OSSC_SESSION_ROOT);
    while (statvfs(where, st) != 0) {
        char *slash = strrchr(where, '/');
        if (!slash || slash == where)
            return statvfs("/", st);
        *slash = '\0';
    }
    return 0;
}

static double gib(uint64_t bytes) { return (double)bytes / (1 << 30); }

/* bytes for a log line: in GiB, or MiB below 1 GiB (a small cacheLimit is no "0.00 GiB"). */
static const char *amount(uint64_t bytes, char *buf, size_t cap)
{
    if (bytes >= (1 << 30))
        snprintf(buf, cap, "%.2f GiB", gib(bytes));
    else
        snprintf(buf, cap, "%.2f MiB", (double)bytes / (1 << 20));
    return buf;
}

int session_plan_cache(ossc_session *s, const uint64_t *sizes, size_t n, ossc_error *err)
{
    const settings *set = &s->client->s;
    uint64_t limit;
    int percent;
    settings_cache_limit(set->cache_limit, &limit, &percent); /* checked when resolved */
    bool lazy = set->fetch_policy == OSSC_FETCH_LAZY;
    if ((lazy || *set->cache_limit) && s->group != OSSC_SESSION_PRIVATE) {
        err_set(err, OSSC_E_CONFIG, "prefetch.policy lazy and cacheLimit need a private "
                "session: sharedGroup's members attach read-only and cannot ask for a file");
        return OSSC_E_CONFIG;
    }
    struct statvfs fs;
    char where[sizeof(set->cache_dir)];
    if (cache_fs(s, &fs, where, sizeof(where)) != 0) {
        err_set(err, OSSC_E_IO, "cannot read the free space of %s: %s", where, strerror(errno));
        return OSSC_E_IO;
    }
    if (percent)
        limit = (uint64_t)fs.f_blocks * fs.f_frsize / 100 * (uint64_t)percent;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += sizes[i];
    uint64_t free_bytes = (uint64_t)fs.f_bavail * fs.f_frsize;
    /* A limit the file system cannot hold would fail fetches later (nothing is held yet):
     * a percentage is cut to the free space, a size is refused. */
    if (limit > free_bytes && percent)
        limit = free_bytes;
    if (limit > free_bytes) {
        err_set(err, OSSC_E_NO_SPACE, "cacheLimit %.2f GiB is more than the %.2f GiB free in %s: "
                "lower it or set cacheDir to a disk with room", gib(limit), gib(free_bytes),
                where);
        return OSSC_E_NO_SPACE;
    }
    if (!lazy && !limit && total > free_bytes) {
        err_set(err, OSSC_E_NO_SPACE, "the large files under %s need %.2f GiB but %s has "
                "%.2f GiB free: set cacheDir to a disk with room, prefetch.policy=lazy (fetch "
                "a file when opened), or a cacheLimit", s->url, gib(total), where,
                gib(free_bytes));
        return OSSC_E_NO_SPACE;
    }
    /* The ordered prefix that fits: all of it, up to the limit, or none when lazy. */
    uint64_t sum = 0;
    size_t eager = 0;
    while (!lazy && eager < n && (!limit || sum + sizes[eager] <= limit))
        sum += sizes[eager++];
    s->n_eager = eager;
    s->cache_limit = limit;
    char shown[32];
    if (limit && eager < n && !lazy)
        LOGI("session %s: cacheLimit %s holds the first %zu of %zu large files; the rest are "
             "fetched when opened", s->path, amount(limit, shown, sizeof(shown)), eager, n);
    return 0;
}

/* The object whose data file link names, or -1: "<data_dir>/<index>", not yet unlinked. */
static long data_object(const ossc_session *s, const char *link)
{
    size_t n = strlen(s->data_dir);
    if (strncmp(link, s->data_dir, n) != 0 || link[n] != '/' || !isdigit((unsigned char)link[n + 1]))
        return -1;
    char *end;
    long i = strtol(link + n + 1, &end, 10);
    if ((*end && *end != '\n') || i < 0 || (size_t)i >= s->n_data)
        return -1; /* " (deleted)": released already */
    return i;
}

/* The pids that hold the session's users lock (LOCK_SH: every attached process), in a
 * malloc'ed array; *n of them, and a hash of them in *hash. NULL if none or unreadable. */
static int *attached_pids(const ossc_session *s, int *n, uint64_t *hash)
{
    int cap = 64, *pids = NULL;
    *n = 0;
    for (;;) {
        int *grown = realloc(pids, (size_t)cap * sizeof(*pids));
        if (!grown)
            break;
        pids = grown;
        *n = session_lock_holder_pids(s->users_fd, pids, cap);
        if (*n <= cap)
            break;
        cap = *n + 16;
    }
    *hash = 0xcbf29ce484222325ULL;
    for (int i = 0; pids && i < *n; i++)
        *hash = (*hash ^ (uint64_t)(unsigned)pids[i]) * 0x100000001b3ULL;
    if (!pids || *n <= 0) {
        free(pids);
        *n = 0;
        return NULL;
    }
    return pids;
}

/* Marks in used[] the objects whose data files one of pids has open or mapped. Only the
 * processes attached to the session (holding its users lock) are read: a process that
 * opens a data file attaches first. Reading maps takes each one's mmap lock, so this runs
 * only when what it could find changed, or once a second while over cacheLimit
 * (session_budget_keep). */
static void scan_users(const ossc_session *s, const int *pids, int n, bool *used)
{
    memset(used, 0, s->n_data * sizeof(*used));
    for (int p = 0; p < n; p++) {
        if (pids[p] <= 0 || pids[p] == (int)getpid())
            continue;
        char path[64], link[OSSC_DATA_PATH_MAX + 32];
        snprintf(path, sizeof(path), "/proc/%d/fd", pids[p]);
        DIR *fds = opendir(path);
        struct dirent *f;
        while (fds && (f = readdir(fds))) {
            char fd_path[600];
            snprintf(fd_path, sizeof(fd_path), "%s/%.256s", path, f->d_name);
            ssize_t len = readlink(fd_path, link, sizeof(link) - 1);
            if (len <= 0)
                continue;
            link[len] = '\0';
            long i = data_object(s, link);
            if (i >= 0)
                used[i] = true;
        }
        if (fds)
            closedir(fds);
        snprintf(path, sizeof(path), "/proc/%d/maps", pids[p]);
        FILE *maps = fopen(path, "re");
        char line[OSSC_DATA_PATH_MAX + 256];
        while (maps && fgets(line, sizeof(line), maps)) {
            char *file = strchr(line, '/');
            long i = file ? data_object(s, file) : -1;
            if (i >= 0)
                used[i] = true;
        }
        if (maps)
            fclose(maps);
    }
}

bool session_object_written(const ossc_session *s, size_t i)
{
    return s->refetches[i].fetch ||
           (i < s->n_eager && s->fetch && !fetch_item_idle(s->fetch, i));
}

bool session_object_complete(const ossc_session *s, size_t i)
{
    const ossc_session_object *o = &session_objects(s->hdr)[i];
    /* Every chunk may be in while the prefetch writes the object again (verifyBeforeRead=no
     * and a CRC mismatch). */
    return atomic_load((_Atomic uint32_t *)&o->chunks_ready) == o->n_chunks &&
           !session_object_written(s, i);
}

/* When object i was last used: opened (the shim's stamp), fetched, or seen held. */
static uint64_t last_use(const ossc_session *s, size_t i)
{
    uint64_t opened = atomic_load((_Atomic uint64_t *)&session_objects(s->hdr)[i].last_open_ms);
    return opened > s->use[i] ? opened : s->use[i];
}

static uint64_t held_bytes(const ossc_session *s)
{
    uint64_t held = 0;
    for (size_t i = 0; i < s->n_data; i++)
        if (s->data_fds[i] >= 0)
            held += session_objects(s->hdr)[i].size;
    return held;
}

void session_budget_keep(ossc_session *s, uint64_t incoming)
{
    uint64_t held = held_bytes(s);
    atomic_store((_Atomic uint64_t *)&s->hdr->bytes_held, held);
    if (!s->cache_limit || held + incoming <= s->cache_limit) {
        s->over_warned = false;
        return;
    }
    /* Over: who holds what (a /proc scan of the attached processes), unless nothing it
     * could find changed since the last look (no open, no fetch, no process came or went)
     * and the last look is recent. A close or an munmap tells the owner nothing, so a file
     * in use is looked at again once a second while the session is over its limit. */
    uint64_t opened = atomic_load((_Atomic uint64_t *)&s->hdr->last_open_ms);
    uint64_t start = now_ms(), users;
    int n_pids;
    int *pids = attached_pids(s, &n_pids, &users);
    bool *used = calloc(s->n_data ? s->n_data : 1, sizeof(*used));
    if (!used || (!incoming && held == s->scan_held && opened == s->scan_opened &&
                  users == s->scan_users && start - s->scan_ms < BUDGET_RESCAN_MS)) {
        free(pids);
        free(used);
        return;
    }
    scan_users(s, pids, n_pids, used);
    free(pids);
    for (size_t i = 0; i < s->n_data; i++)
        if (used[i])
            s->use[i] = start; /* held now: the most recently used */
    while (held + incoming > s->cache_limit) {
        /* Not one opened since the scan began: the scan may have missed its new fd. */
        long oldest = -1;
        for (size_t i = 0; i < s->n_data; i++)
            if (s->data_fds[i] >= 0 && !used[i] && session_object_complete(s, i) &&
                atomic_load((_Atomic uint64_t *)&session_objects(s->hdr)[i].last_open_ms) <
                    start &&
                (oldest < 0 || last_use(s, i) < last_use(s, (size_t)oldest)))
                oldest = (long)i;
        if (oldest < 0 || !session_release_object(s, (size_t)oldest, "cacheLimit"))
            break;
        held -= session_objects(s->hdr)[oldest].size;
        atomic_fetch_add((_Atomic uint32_t *)&s->hdr->releases, 1);
    }
    free(used);
    session_wake_readers(s->hdr);
    atomic_store((_Atomic uint64_t *)&s->hdr->bytes_held, held);
    s->scan_held = held;
    s->scan_opened = opened;
    s->scan_users = users;
    s->scan_ms = start;
    if (held + incoming > s->cache_limit && !s->over_warned) {
        s->over_warned = true;
        char in_use[32], over[32], limit[32];
        LOGW("session %s: files in use hold %s, %s over cacheLimit %s; reads go on, and files "
             "are released once closed (looked at again each second, and on the next open, "
             "fetch, or process that attaches or ends)", s->path,
             amount(held + incoming, in_use, sizeof(in_use)),
             amount(held + incoming - s->cache_limit, over, sizeof(over)),
             amount(s->cache_limit, limit, sizeof(limit)));
    }
}
