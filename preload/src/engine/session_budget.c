/* session_budget.c: how much of a session the owner keeps in its cache. At start: whether an
 * eager prefetch fits the cache's free space (refused in one line if not and there is no
 * cacheLimit), cacheLimit in bytes, and how much of the ordered prefix is prefetched (all
 * of it eagerly, up to the limit, or nothing when lazy). While serving: the bytes held kept
 * under cacheLimit by releasing whole objects that no process has open or mapped (the /proc
 * fd and maps tables say which), least recently opened first. Releasing never changes the
 * bytes of a file: it is unlinked, and whoever still holds it keeps its pages. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "session.h"

#define SCAN_EVERY_MS 1000 /* over the limit with nothing to release: look again this often */

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
    if (limit && eager < n && !lazy)
        LOGI("session %s: cacheLimit %.2f GiB holds the first %zu of %zu large files; the "
             "rest are fetched when opened", s->path, gib(limit), eager, n);
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

/* Marks in used[] the objects whose data files some process other than the owner has open
 * or mapped. Processes of other uids cannot be read, and cannot open ours either. */
static void scan_users(const ossc_session *s, bool *used)
{
    memset(used, 0, s->n_data * sizeof(*used));
    DIR *proc = opendir("/proc");
    if (!proc)
        return;
    char self[16];
    snprintf(self, sizeof(self), "%d", (int)getpid());
    struct dirent *e;
    while ((e = readdir(proc))) {
        if (!isdigit((unsigned char)e->d_name[0]) || strcmp(e->d_name, self) == 0)
            continue;
        char path[300], link[OSSC_DATA_PATH_MAX + 32];
        snprintf(path, sizeof(path), "/proc/%.32s/fd", e->d_name);
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
        snprintf(path, sizeof(path), "/proc/%.32s/maps", e->d_name);
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
    closedir(proc);
}

static bool complete(const ossc_session *s, size_t i)
{
    const ossc_session_object *o = &session_objects(s->hdr)[i];
    return atomic_load((_Atomic uint32_t *)&o->chunks_ready) == o->n_chunks &&
           !s->refetches[i].fetch;
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
    /* Over: who holds what (a /proc scan), unless nothing changed since the last look. */
    uint64_t opened = atomic_load((_Atomic uint64_t *)&s->hdr->last_open_ms);
    if (!incoming && held == s->scan_held && opened == s->scan_opened &&
        now_ms() < s->scan_ms + SCAN_EVERY_MS)
        return;
    bool *used = calloc(s->n_data ? s->n_data : 1, sizeof(*used));
    if (!used)
        return;
    scan_users(s, used);
    uint64_t now = now_ms();
    for (size_t i = 0; i < s->n_data; i++)
        if (used[i])
            s->use[i] = now; /* held now: the most recently used */
    while (held + incoming > s->cache_limit) {
        long oldest = -1;
        for (size_t i = 0; i < s->n_data; i++)
            if (s->data_fds[i] >= 0 && !used[i] && complete(s, i) &&
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
    s->scan_ms = now_ms();
    s->scan_held = held;
    s->scan_opened = opened;
    if (held + incoming > s->cache_limit && !s->over_warned) {
        s->over_warned = true;
        LOGW("session %s: files in use hold %.2f GiB, %.2f GiB over cacheLimit %.2f GiB; reads "
             "go on, and files are released as they are closed", s->path,
             gib(held + incoming), gib(held + incoming - s->cache_limit), gib(s->cache_limit));
    }
}
