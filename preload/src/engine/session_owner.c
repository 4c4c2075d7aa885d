/* session_owner.c: the owner of a session. Lists the store, materializes MODEL_DIR, publishes
 * the control file and data files in /dev/shm, and prefetches large objects into them; each
 * landed chunk sets its ready bit and wakes the readers. A thread answers blocked readers'
 * requests (the `wanted` futex) and beats the heartbeat readers use to tell the owner lives. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "session_layout.h"

#define MARKER_NAME ".ossc-materialized"
#define HEARTBEAT_MS 100
#define OSSC_DATA_PATH_MAX 1100 /* data_dir and an index */

struct ossc_session {
    ossc_client *client;
    ossc_listing *listing;
    char path[256];             /* /dev/shm/ossc-<hash> */
    char data_dir[1024];        /* <path>/data, or <cacheDir>/ossc-<hash> */
    char model_dir[OSSC_MODEL_DIR_MAX];
    bool attached;              /* another live owner fetches; we only wait */
    ossc_session_header *hdr;
    size_t control_size;
    int control_fd;             /* holds the owner lock: readers see it vanish if we die */
    ossc_fetch *fetch;
    int *data_fds;
    size_t n_data;
    const char **keys;          /* object index -> key (owned by the listing) */
    struct refetch *refetches;  /* object index -> its refetch after a release */
    uint64_t complete_ms;
    pthread_t helper;
    bool helper_started;
    atomic_bool stopping;
};

/* Fetching one object again after its data file was released. */
struct refetch {
    ossc_session *s;
    uint32_t object;
    ossc_fetch *fetch; /* NULL when none runs */
};

static long futex(uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, word, op, val, ts, NULL, 0);
}

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

static ossc_session_object *objects_of(ossc_session_header *h)
{
    return (ossc_session_object *)((char *)h + h->objects_offset);
}

static uint64_t *bits_of(ossc_session_header *h)
{
    return (uint64_t *)((char *)h + h->bits_offset);
}

/* Where a key goes below MODEL_DIR; NULL for a directory marker; error for an unsafe key. */
static int relative_name(const char *key, const char *prefix, const char **out, ossc_error *err)
{
    size_t pl = strlen(prefix);
    const char *rel = strncmp(key, prefix, pl) == 0 ? key + pl : key;
    *out = NULL;
    if (!*rel || rel[strlen(rel) - 1] == '/')
        return 0;
    for (const char *p = rel;;) {
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) {
            err_set(err, OSSC_E_PROTOCOL, "refusing key '%s': it would land outside MODEL_DIR",
                    key);
            return OSSC_E_PROTOCOL;
        }
        if (!p[n])
            break;
        p += n + 1;
    }
    *out = rel;
    return 0;
}

static int mkdirs(const char *path, ossc_error *err)
{
    char buf[OSSC_MODEL_DIR_MAX + 1100];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                err_set(err, OSSC_E_IO, "cannot create directory %s: %s", buf, strerror(errno));
                err->sys_errno = errno;
                return OSSC_E_IO;
            }
            if (!saved)
                return 0;
            *p = saved;
        }
    }
}

/* A prefix with nothing to serve is a wrong path, not an empty model. */
static int check_listing(ossc_session *s, const char *url, ossc_error *err)
{
    for (size_t i = 0; i < s->listing->count; i++) {
        const char *rel;
        int rc = relative_name(s->listing->objects[i].key, ossc_client_prefix(s->client), &rel,
                               err);
        if (rc || rel)
            return rc;
    }
    err_set(err, OSSC_E_NOT_FOUND, "no objects under %s: check the bucket and prefix", url);
    return OSSC_E_NOT_FOUND;
}

/* MODEL_DIR must be new, empty, or one we materialized before. */
static int prepare_model_dir(ossc_session *s, ossc_error *err)
{
    const char *dir = s->model_dir;
    int rc = mkdirs(dir, err);
    if (rc)
        return rc;
    char marker[OSSC_MODEL_DIR_MAX + 64];
    snprintf(marker, sizeof(marker), "%s/" MARKER_NAME, dir);
    if (access(marker, F_OK) == 0 || s->client->s.allow_non_empty)
        goto mark;
    DIR *d = opendir(dir);
    if (!d) {
        err_set(err, OSSC_E_IO, "cannot open MODEL_DIR %s: %s", dir, strerror(errno));
        return OSSC_E_IO;
    }
    struct dirent *e;
    bool empty = true;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = false;
    closedir(d);
    if (!empty) {
        err_set(err, OSSC_E_CONFIG, "MODEL_DIR %s is not empty and was not created by ossc: "
                "point it at a new directory, or set allowNonEmptyModelDir=yes to fill it", dir);
        return OSSC_E_CONFIG;
    }
mark:;
    int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
        close(fd);
    return 0;
}

/* Large objects in the order loaders want them: the safetensors index's shard order first
 * (as the weight map names them), then the rest alphabetically (the listing's order). */
static void order_by_index(ossc_session *s, size_t *order, size_t n)
{
    char path[OSSC_MODEL_DIR_MAX + 64];
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", s->model_dir);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    size_t cap = 16 << 20, len = 0;
    char *buf = malloc(cap);
    if (buf)
        len = fread(buf, 1, cap, f);
    fclose(f);
    cJSON *root = buf ? cJSON_ParseWithLength(buf, len) : NULL;
    free(buf);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    size_t placed = 0;
    for (const cJSON *e = map ? map->child : NULL; e; e = e->next) {
        const char *shard = cJSON_GetStringValue(e);
        if (!shard)
            continue;
        for (size_t k = placed; k < n; k++) {
            const char *rel;
            ossc_error ignored;
            relative_name(s->listing->objects[order[k]].key, ossc_client_prefix(s->client), &rel,
                          &ignored);
            if (rel && strcmp(rel, shard) == 0) {
                size_t moved = order[k];
                memmove(order + placed + 1, order + placed, (k - placed) * sizeof(*order));
                order[placed++] = moved;
                break;
            }
        }
    }
    cJSON_Delete(root);
}

static void chunk_landed(ossc_session *s, uint32_t object, uint64_t offset, int status)
{
    ossc_session_header *h = s->hdr;
    ossc_session_object *o = &objects_of(h)[object];
    if (status == 0) {
        uint32_t chunk = o->first_chunk + (uint32_t)(offset / h->chunk_size);
        atomic_fetch_or((_Atomic uint64_t *)&bits_of(h)[chunk / 64], 1ULL << (chunk % 64));
        atomic_fetch_add((_Atomic uint32_t *)&o->chunks_ready, 1);
    } else {
        int e = status == OSSC_E_AUTH ? EACCES : status == OSSC_E_NOT_FOUND ? ENOENT : EIO;
        atomic_store((_Atomic int32_t *)&o->error, e);
    }
    atomic_fetch_add((_Atomic uint32_t *)&h->progress, 1);
    futex(&h->progress, FUTEX_WAKE, INT32_MAX, NULL);
}

static void on_chunk(void *ctx, size_t item, uint64_t offset, uint64_t length, int status)
{
    ossc_session *s = ctx;
    (void)length;
    chunk_landed(s, (uint32_t)item, offset, status); /* fetch item i is object i */
}

static void on_refetch_chunk(void *ctx, size_t item, uint64_t offset, uint64_t length,
                             int status)
{
    struct refetch *r = ctx;
    (void)item, (void)length;
    chunk_landed(r->s, r->object, offset, status);
}

static void data_path(const ossc_session *s, size_t object, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%zu", s->data_dir, object);
}

static void set_ready_bits(ossc_session_header *h, const ossc_session_object *o, bool ready)
{
    for (uint32_t c = o->first_chunk; c < o->first_chunk + o->n_chunks; c++) {
        _Atomic uint64_t *word = (_Atomic uint64_t *)&bits_of(h)[c / 64];
        if (ready)
            atomic_fetch_or(word, 1ULL << (c % 64));
        else
            atomic_fetch_and(word, ~(1ULL << (c % 64)));
    }
}

/* expireTimeSec after the last open: the data files go (open fds and mappings keep their
 * pages). Ready bits are cleared before the unlink, so a reader that finds no file also finds
 * no chunk and asks for it, which fetches the object again. A file that cannot be unlinked
 * stays as it is: it is never truncated or rewritten under a reader. */
static void release_data(ossc_session *s)
{
    ossc_session_header *h = s->hdr;
    ossc_session_object *objs = objects_of(h);
    size_t released = 0;
    for (size_t i = 0; i < s->n_data; i++) {
        if (s->data_fds[i] < 0)
            continue;
        set_ready_bits(h, &objs[i], false);
        atomic_store((_Atomic uint32_t *)&objs[i].chunks_ready, 0);
        char path[OSSC_DATA_PATH_MAX];
        data_path(s, i, path, sizeof(path));
        if (unlink(path) != 0) {
            LOGW("cannot release %s: %s; keeping it", path, strerror(errno));
            set_ready_bits(h, &objs[i], true);
            atomic_store((_Atomic uint32_t *)&objs[i].chunks_ready, objs[i].n_chunks);
            continue;
        }
        close(s->data_fds[i]);
        s->data_fds[i] = -1;
        released++;
    }
    atomic_fetch_add((_Atomic uint32_t *)&h->progress, 1);
    futex(&h->progress, FUTEX_WAKE, INT32_MAX, NULL);
    LOGI("session %s: released %zu data files %u s after the last open", s->path, released,
         h->expire_time_sec);
}

/* Whether any data file is still here (none after a release, until a reader asks). */
static bool holds_data(const ossc_session *s)
{
    for (size_t i = 0; i < s->n_data; i++)
        if (s->data_fds[i] >= 0)
            return true;
    return false;
}

static void refetch(ossc_session *s, uint32_t object)
{
    struct refetch *r = &s->refetches[object];
    if (r->fetch || s->data_fds[object] >= 0)
        return; /* running, or its file is back already */
    ossc_session_object *o = &objects_of(s->hdr)[object];
    char path[OSSC_DATA_PATH_MAX];
    data_path(s, object, path, sizeof(path));
    ossc_error err;
    /* O_EXCL: a file still there belongs to readers and is never truncated. */
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)o->size) != 0) {
        LOGE("cannot create %s again: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        atomic_store((_Atomic int32_t *)&o->error, EIO);
        return;
    }
    s->data_fds[object] = fd;
    atomic_store((_Atomic int32_t *)&o->error, 0); /* a failed refetch is not forever */
    ossc_fetch_item item = {s->keys[object], o->size, 0, o->size, fd, 0, NULL};
    *r = (struct refetch){s, object, NULL};
    r->fetch = ossc_fetch_start(s->client, &item, 1, on_refetch_chunk, r, &err);
    if (!r->fetch) {
        LOGE("%s: %s", s->keys[object], err.message);
        atomic_store((_Atomic int32_t *)&o->error, EIO);
    }
}

/* Frees the refetches that have ended; true if one still runs. */
static bool reap_refetches(ossc_session *s)
{
    bool running = false;
    for (size_t i = 0; s->refetches && i < s->n_data; i++) {
        struct refetch *r = &s->refetches[i];
        if (!r->fetch)
            continue;
        ossc_fetch_stats st;
        ossc_fetch_stats_get(r->fetch, &st);
        if (st.finished) {
            ossc_fetch_free(r->fetch);
            r->fetch = NULL;
            s->complete_ms = now_ms(); /* expiry counts again from here */
        } else {
            running = true;
        }
    }
    return running;
}

/* Answers blocked readers and beats the heartbeat until the prefetch ends. */
static void *helper_main(void *arg)
{
    ossc_session *s = arg;
    ossc_session_header *h = s->hdr;
    uint32_t seen = atomic_load((_Atomic uint32_t *)&h->wanted);
    struct timespec tick = {0, HEARTBEAT_MS * 1000000L};
    while (!atomic_load(&s->stopping)) {
        atomic_store((_Atomic uint64_t *)&h->heartbeat_ms, now_ms());
        futex(&h->wanted, FUTEX_WAIT, seen, &tick);
        uint32_t now = atomic_load((_Atomic uint32_t *)&h->wanted);
        if (now != seen) {
            seen = now;
            uint32_t chunk = atomic_load((_Atomic uint32_t *)&h->wanted_chunk);
            ossc_session_object *objs = objects_of(h);
            for (uint32_t i = 0; i < s->n_data; i++) {
                ossc_session_object *o = &objs[i];
                if (chunk >= o->first_chunk && chunk < o->first_chunk + o->n_chunks) {
                    uint64_t offset = (uint64_t)(chunk - o->first_chunk) * h->chunk_size;
                    ossc_fetch *running = s->refetches[i].fetch;
                    if (s->data_fds[i] < 0)
                        refetch(s, i);
                    else if (running)
                        ossc_fetch_prioritize(running, 0, offset);
                    else
                        ossc_fetch_prioritize(s->fetch, i, offset);
                    break;
                }
            }
        }
        ossc_fetch_stats st;
        ossc_fetch_stats_get(s->fetch, &st);
        if (st.finished && h->state == OSSC_SESSION_FETCHING) {
            s->complete_ms = now_ms();
            atomic_store((_Atomic uint32_t *)&h->state,
                         st.items_failed ? OSSC_SESSION_FAILED : OSSC_SESSION_COMPLETE);
            atomic_fetch_add((_Atomic uint32_t *)&h->progress, 1);
            futex(&h->progress, FUTEX_WAKE, INT32_MAX, NULL);
        }
        bool refetching = reap_refetches(s);
        uint64_t last = atomic_load((_Atomic uint64_t *)&h->last_open_ms);
        if (h->state == OSSC_SESSION_COMPLETE && h->expire_time_sec && !refetching &&
            holds_data(s) &&
            now_ms() >= (last > s->complete_ms ? last : s->complete_ms) +
                            (uint64_t)h->expire_time_sec * 1000)
            release_data(s);
    }
    return NULL;
}

/* A live owner already serves this MODEL_DIR: attach to it. A dead owner's session, even a
 * complete one, is not reused: its data may have been released, and nobody would fetch it. */
static bool live_session(const char *control)
{
    int fd = open(control, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ossc_session_header h;
    /* The owner holds an exclusive lock on the control file for as long as it lives. */
    bool owner_alive = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    bool live = pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
                h.magic == OSSC_SESSION_MAGIC && h.version == OSSC_SESSION_VERSION &&
                h.state != OSSC_SESSION_FAILED && owner_alive;
    close(fd);
    return live;
}

/* The placeholders stand for bytes only the session can serve: without it they would read
 * as zeros, so they go with it. */
static void remove_placeholders(ossc_session *s)
{
    const ossc_session_object *objs = objects_of(s->hdr);
    const char *names = (const char *)s->hdr + s->hdr->names_offset;
    for (size_t i = 0; i < s->n_data; i++) {
        char path[OSSC_MODEL_DIR_MAX + 1100];
        snprintf(path, sizeof(path), "%s/%s", s->model_dir, names + objs[i].name_offset);
        unlink(path);
    }
}

static void remove_session_files(const ossc_session *s)
{
    char buf[1300];
    /* Only a real directory of ours: the name is predictable, and cacheDir may be shared
     * (a symlink planted there must not make us empty someone else's directory). */
    struct stat st;
    if (lstat(s->data_dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
        goto control;
    DIR *d = opendir(s->data_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(buf, sizeof(buf), "%s/%s", s->data_dir, e->d_name);
        unlink(buf);
    }
    if (d)
        closedir(d);
    rmdir(s->data_dir);
control:
    snprintf(buf, sizeof(buf), "%s/control", s->path);
    unlink(buf);
    snprintf(buf, sizeof(buf), "%s/control.new", s->path);
    unlink(buf);
    rmdir(s->path);
}

/* Small objects land whole in MODEL_DIR before anything reads them. */
static int fetch_small(ossc_session *s, const size_t *small, size_t n, ossc_error *err)
{
    ossc_fetch_item *items = calloc(n ? n : 1, sizeof(*items));
    if (!items) {
        err_set(err, OSSC_E_NOMEM, "out of memory");
        return OSSC_E_NOMEM;
    }
    int rc = 0;
    size_t opened = 0;
    for (; opened < n; opened++) {
        const ossc_object *o = &s->listing->objects[small[opened]];
        const char *rel;
        relative_name(o->key, ossc_client_prefix(s->client), &rel, err);
        char path[OSSC_MODEL_DIR_MAX + 1100];
        snprintf(path, sizeof(path), "%s/%s", s->model_dir, rel);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            err_set(err, OSSC_E_IO, "cannot create %s: %s", path, strerror(errno));
            rc = OSSC_E_IO;
            break;
        }
        items[opened] = (ossc_fetch_item){o->key, o->size, 0, o->size, fd, 0, NULL};
    }
    if (rc == 0 && n) {
        ossc_fetch *f = ossc_fetch_start(s->client, items, n, NULL, NULL, err);
        rc = f ? ossc_fetch_wait(f, -1, err) : err->code;
        ossc_fetch_free(f);
    }
    for (size_t i = 0; i < opened; i++)
        close(items[i].fd);
    free(items);
    return rc;
}

static int publish(ossc_session *s, const size_t *large, size_t n, ossc_error *err)
{
    const uint64_t chunk = s->client->s.chunk_size;
    char control[300], tmp[320];
    size_t names = 0;
    uint32_t n_chunks = 0;
    const char *prefix = ossc_client_prefix(s->client);
    for (size_t i = 0; i < n; i++) {
        const ossc_object *o = &s->listing->objects[large[i]];
        names += strlen(o->key) + 1;
        n_chunks += (uint32_t)((o->size + chunk - 1) / chunk);
    }
    size_t objects_off = (sizeof(ossc_session_header) + 63) & ~(size_t)63;
    size_t bits_off = objects_off + n * sizeof(ossc_session_object);
    size_t names_off = bits_off + ((n_chunks + 63) / 64) * 8;
    s->control_size = names_off + names;

    if (mkdirs(s->path, err) || mkdirs(s->data_dir, err))
        return OSSC_E_IO;
    snprintf(control, sizeof(control), "%s/control", s->path);
    snprintf(tmp, sizeof(tmp), "%s/control.new", s->path);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)s->control_size) != 0 || flock(fd, LOCK_EX) != 0) {
        err_set(err, OSSC_E_IO, "cannot create %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return OSSC_E_IO;
    }
    s->control_fd = fd;
    void *map = mmap(NULL, s->control_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        err_set(err, OSSC_E_IO, "cannot map %s: %s", tmp, strerror(errno));
        return OSSC_E_IO;
    }
    ossc_session_header *h = s->hdr = map;
    h->magic = OSSC_SESSION_MAGIC;
    h->version = OSSC_SESSION_VERSION;
    h->header_size = sizeof(*h);
    h->state = OSSC_SESSION_FETCHING;
    h->owner_pid = (uint32_t)getpid();
    h->n_objects = (uint32_t)n;
    h->n_chunks = n_chunks;
    h->chunk_size = chunk;
    h->objects_offset = objects_off;
    h->bits_offset = bits_off;
    h->names_offset = names_off;
    h->control_size = s->control_size;
    h->read_timeout_ms = (uint32_t)s->client->s.read_timeout_sec * 1000;
    h->heartbeat_ms = h->last_open_ms = now_ms();
    h->log_level = (uint32_t)s->client->s.log_level;
    h->expire_time_sec = (uint32_t)s->client->s.expire_time_sec;
    snprintf(h->model_dir, sizeof(h->model_dir), "%s", s->model_dir);
    snprintf(h->log_path, sizeof(h->log_path), "%s", s->client->s.log_path);
    snprintf(h->audit_path, sizeof(h->audit_path), "%s", s->client->s.audit_path);
    snprintf(h->data_dir, sizeof(h->data_dir), "%s", s->data_dir);

    ossc_session_object *objs = objects_of(h);
    char *name_area = (char *)h + names_off;
    size_t name_pos = 0;
    uint32_t next_chunk = 0;
    for (size_t i = 0; i < n; i++) {
        const ossc_object *o = &s->listing->objects[large[i]];
        const char *rel;
        relative_name(o->key, prefix, &rel, err);
        size_t len = strlen(rel);
        memcpy(name_area + name_pos, rel, len + 1);
        objs[i] = (ossc_session_object){o->size, next_chunk,
                                        (uint32_t)((o->size + chunk - 1) / chunk),
                                        (uint32_t)name_pos, (uint32_t)len, 0, 0};
        next_chunk += objs[i].n_chunks;
        name_pos += len + 1;

        /* The data file the prefetch fills, sized to the object. */
        char path[OSSC_MODEL_DIR_MAX + 1100];
        data_path(s, i, path, sizeof(path));
        int dfd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (dfd < 0 || ftruncate(dfd, (off_t)o->size) != 0) {
            err_set(err, OSSC_E_IO, "cannot create %s: %s", path, strerror(errno));
            if (dfd >= 0)
                close(dfd);
            return OSSC_E_IO;
        }
        s->data_fds[s->n_data++] = dfd;
    }
    /* Readers see the control file only once it is whole. */
    if (rename(tmp, control) != 0) {
        err_set(err, OSSC_E_IO, "cannot publish %s: %s", control, strerror(errno));
        return OSSC_E_IO;
    }
    /* Only now the size-correct placeholders: whoever finds one also finds the session, so
     * no process reads a placeholder's holes as if they were the object. */
    for (size_t i = 0; i < n; i++) {
        char path[OSSC_MODEL_DIR_MAX + 1100];
        snprintf(path, sizeof(path), "%s/%s", s->model_dir, name_area + objs[i].name_offset);
        int pfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (pfd < 0 || ftruncate(pfd, (off_t)objs[i].size) != 0) {
            err_set(err, OSSC_E_IO, "cannot create placeholder %s: %s", path, strerror(errno));
            if (pfd >= 0)
                close(pfd);
            return OSSC_E_IO;
        }
        close(pfd);
    }
    return 0;
}

OSSC_API ossc_session *ossc_session_start(const char *url, const char *model_dir,
                                          const char *const *overrides, size_t n_overrides,
                                          ossc_error *err)
{
    err_clear(err);
    ossc_session *s = calloc(1, sizeof(*s));
    if (!s) {
        err_set(err, OSSC_E_NOMEM, "out of memory");
        return NULL;
    }
    s->control_fd = -1;
    size_t *order = NULL;
    int rc = OSSC_E_CONFIG;
    if (!model_dir || model_dir[0] != '/') {
        err_set(err, OSSC_E_CONFIG, "MODEL_DIR must be an absolute path, not '%s'",
                model_dir ? model_dir : "");
        goto fail;
    }
    if (!(s->client = ossc_client_new(url, overrides, n_overrides, err)))
        goto fail;
    snprintf(s->model_dir, sizeof(s->model_dir), "%s", model_dir);
    if ((rc = mkdirs(s->model_dir, err)))
        goto fail;
    char real[PATH_MAX];
    if (!realpath(model_dir, real)) {
        err_set(err, OSSC_E_IO, "cannot resolve MODEL_DIR %s: %s", model_dir, strerror(errno));
        rc = OSSC_E_IO;
        goto fail;
    }
    snprintf(s->model_dir, sizeof(s->model_dir), "%s", real);
    uint64_t key = fnv1a64(s->model_dir);
    snprintf(s->path, sizeof(s->path), OSSC_SESSION_ROOT "/" OSSC_SESSION_PREFIX "%016llx",
             (unsigned long long)key);
    if (*s->client->s.cache_dir)
        snprintf(s->data_dir, sizeof(s->data_dir), "%s/" OSSC_SESSION_PREFIX "%016llx",
                 s->client->s.cache_dir, (unsigned long long)key);
    else
        snprintf(s->data_dir, sizeof(s->data_dir), "%s/data", s->path);
    char control[300];
    snprintf(control, sizeof(control), "%s/control", s->path);
    if (live_session(control)) {
        LOGI("attaching to the live session %s for %s", s->path, s->model_dir);
        s->attached = true;
        return s;
    }
    remove_session_files(s); /* a dead owner's leftovers */
    /* The store first: bad credentials or a wrong path leave MODEL_DIR empty and unmarked. */
    if ((rc = ossc_list(s->client, NULL, &s->listing, err)) || (rc = check_listing(s, url, err)) ||
        (rc = prepare_model_dir(s, err)))
        goto fail;

    size_t n = s->listing->count, n_small = 0, n_large = 0;
    order = malloc((n ? n : 1) * 2 * sizeof(*order));
    s->data_fds = malloc((n ? n : 1) * sizeof(int));
    s->keys = malloc((n ? n : 1) * sizeof(*s->keys));
    s->refetches = calloc(n ? n : 1, sizeof(*s->refetches));
    if (!order || !s->data_fds || !s->keys || !s->refetches) {
        err_set(err, OSSC_E_NOMEM, "out of memory");
        rc = OSSC_E_NOMEM;
        goto fail;
    }
    size_t *small = order + n, *large = order;
    for (size_t i = 0; i < n; i++) {
        const char *rel;
        if ((rc = relative_name(s->listing->objects[i].key, ossc_client_prefix(s->client), &rel,
                                err)))
            goto fail;
        if (!rel)
            continue;
        char path[OSSC_MODEL_DIR_MAX + 1100];
        snprintf(path, sizeof(path), "%s/%s", s->model_dir, rel);
        *strrchr(path, '/') = '\0';
        if ((rc = mkdirs(path, err)))
            goto fail;
        if (s->listing->objects[i].size < s->client->s.small_file_size)
            small[n_small++] = i;
        else
            large[n_large++] = i;
    }
    if ((rc = fetch_small(s, small, n_small, err)))
        goto fail;
    order_by_index(s, large, n_large);
    if ((rc = publish(s, large, n_large, err)))
        goto fail;

    ossc_fetch_item *items = calloc(n_large ? n_large : 1, sizeof(*items));
    if (!items) {
        err_set(err, OSSC_E_NOMEM, "out of memory");
        rc = OSSC_E_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < n_large; i++) {
        const ossc_object *o = &s->listing->objects[large[i]];
        items[i] = (ossc_fetch_item){o->key, o->size, 0, o->size, s->data_fds[i], 0, NULL};
        s->keys[i] = o->key;
    }
    s->fetch = ossc_fetch_start(s->client, items, n_large, on_chunk, s, err);
    free(items);
    if (!s->fetch) {
        rc = err->code;
        goto fail;
    }
    if (pthread_create(&s->helper, NULL, helper_main, s) == 0)
        s->helper_started = true;
    free(order);
    LOGI("session %s: %zu small files in %s, prefetching %zu large ones", s->path, n_small,
         s->model_dir, n_large);
    return s;
fail:
    (void)rc;
    free(order);
    ossc_session_stop(s, 1);
    return NULL;
}

OSSC_API int ossc_session_wait(ossc_session *s, int timeout_ms, ossc_error *err)
{
    err_clear(err);
    return s->fetch ? ossc_fetch_wait(s->fetch, timeout_ms, err) : 0;
}

OSSC_API void ossc_session_stats(ossc_session *s, ossc_fetch_stats *out)
{
    if (s->fetch) {
        ossc_fetch_stats_get(s->fetch, out);
        return;
    }
    memset(out, 0, sizeof(*out));
    out->finished = 1;
}

OSSC_API const char *ossc_session_path(const ossc_session *s) { return s->path; }

OSSC_API const char *ossc_session_item_name(const ossc_session *s, size_t item)
{
    if (!s->hdr || item >= s->n_data)
        return NULL;
    const ossc_session_object *o = &objects_of(s->hdr)[item];
    return (const char *)s->hdr + s->hdr->names_offset + o->name_offset;
}

OSSC_API void ossc_session_stop(ossc_session *s, int remove)
{
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    if (s->helper_started) {
        futex(&s->hdr->wanted, FUTEX_WAKE, 1, NULL); /* now, not at its next tick */
        pthread_join(s->helper, NULL);
    }
    ossc_fetch_free(s->fetch);
    for (size_t i = 0; s->refetches && i < s->n_data; i++)
        ossc_fetch_free(s->refetches[i].fetch);
    if (s->hdr) {
        if (s->hdr->state == OSSC_SESSION_FETCHING) {
            /* Readers must not wait for chunks nobody will fetch. */
            atomic_store((_Atomic uint32_t *)&s->hdr->state, OSSC_SESSION_FAILED);
            atomic_fetch_add((_Atomic uint32_t *)&s->hdr->progress, 1);
            futex(&s->hdr->progress, FUTEX_WAKE, INT32_MAX, NULL);
        }
        if (remove && !s->attached)
            remove_placeholders(s);
        munmap(s->hdr, s->control_size);
    }
    for (size_t i = 0; i < s->n_data; i++)
        if (s->data_fds[i] >= 0)
            close(s->data_fds[i]);
    if (s->control_fd >= 0)
        close(s->control_fd);
    if (remove && !s->attached && s->path[0])
        remove_session_files(s);
    free(s->data_fds);
    free(s->keys);
    free(s->refetches);
    ossc_listing_free(s->listing);
    ossc_client_free(s->client);
    free(s);
}
