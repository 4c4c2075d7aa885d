/* session_owner.c: the owner of a session (run by ossc-owner, never inside the application).
 * Takes the session directory for MODEL_DIR (or finds the live owner already serving it),
 * lists the store, materializes MODEL_DIR, publishes the control file and data files, and
 * prefetches the large objects into them; each landed chunk sets its ready bit and wakes the
 * readers. A helper thread beats the heartbeat, answers blocked readers (the `wanted`
 * futex), releases data files expireTimeSec after the last open and fetches a released
 * object again when asked. ossc_session_serve returns once no process has used the session
 * for max(expireTimeSec, OSSC_SESSION_LINGER_MIN_MS); ossc_session_stop removes it. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "session.h"

#define HEARTBEAT_MS 100
#define SERVE_TICK_MS 200
#define LIVE_POLL_MS 50
#define TAKEN (-1)     /* the session directory is ours: create the session */
#define NEXT_NAME (-2) /* it serves another MODEL_DIR (a hash collision) */

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

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static ossc_session_object *objects_of(ossc_session_header *h)
{
    return (ossc_session_object *)((char *)h + h->objects_offset);
}

static uint64_t *bits_of(ossc_session_header *h)
{
    return (uint64_t *)((char *)h + h->bits_offset);
}

static void wake_readers(ossc_session_header *h)
{
    atomic_fetch_add((_Atomic uint32_t *)&h->progress, 1);
    futex(&h->progress, FUTEX_WAKE, INT32_MAX, NULL);
}

static void set_state(ossc_session_header *h, uint32_t state)
{
    atomic_store((_Atomic uint32_t *)&h->state, state);
    wake_readers(h);
}

/* A prefix with nothing to serve is a wrong path, not an empty model. */
static int check_listing(ossc_session *s, const char *url, ossc_error *err)
{
    for (size_t i = 0; i < s->listing->count; i++) {
        const char *rel;
        int rc = ossc_relative_name(s->listing->objects[i].key, ossc_client_prefix(s->client),
                                    &rel, err);
        if (rc || rel)
            return rc;
    }
    err_set(err, OSSC_E_NOT_FOUND, "no objects under %s: check the bucket and prefix", url);
    return OSSC_E_NOT_FOUND;
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
            ossc_relative_name(s->listing->objects[order[k]].key, ossc_client_prefix(s->client),
                               &rel, &ignored);
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

static void chunk_landed(ossc_session *s, uint32_t object, uint64_t offset, uint64_t length,
                         int status)
{
    ossc_session_header *h = s->hdr;
    ossc_session_object *o = &objects_of(h)[object];
    if (status == 0) {
        uint32_t chunk = o->first_chunk + (uint32_t)(offset / h->chunk_size);
        atomic_fetch_or((_Atomic uint64_t *)&bits_of(h)[chunk / 64], 1ULL << (chunk % 64));
        atomic_fetch_add((_Atomic uint32_t *)&o->chunks_ready, 1);
        atomic_fetch_add((_Atomic uint64_t *)&h->bytes_done, length);
        atomic_store((_Atomic int32_t *)&h->current_object, (int32_t)object);
    } else {
        int e = status == OSSC_E_AUTH ? EACCES : status == OSSC_E_NOT_FOUND ? ENOENT : EIO;
        atomic_store((_Atomic int32_t *)&o->error, e);
        atomic_fetch_add((_Atomic uint32_t *)&h->objects_failed, 1);
    }
    wake_readers(h);
}

static void on_chunk(void *ctx, size_t item, uint64_t offset, uint64_t length, int status)
{
    chunk_landed(ctx, (uint32_t)item, offset, length, status); /* fetch item i is object i */
}

static void on_refetch_chunk(void *ctx, size_t item, uint64_t offset, uint64_t length,
                             int status)
{
    struct refetch *r = ctx;
    (void)item;
    chunk_landed(r->s, r->object, offset, length, status);
}

static void data_path(const ossc_session *s, size_t object, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%zu", s->data_dir, object);
}

static int create_data_file(const ossc_session *s, size_t object, uint64_t size)
{
    char path[OSSC_DATA_PATH_MAX];
    data_path(s, object, path, sizeof(path));
    /* O_EXCL: a file still there belongs to readers and is never truncated. */
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0 && (session_file_share(fd, s->group) != 0 || ftruncate(fd, (off_t)size) != 0)) {
        int e = errno;
        close(fd);
        unlink(path);
        errno = e;
        return -1;
    }
    return fd;
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
    wake_readers(h);
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
    int fd = create_data_file(s, object, o->size);
    if (fd < 0) {
        LOGE("cannot create the data file of %s again: %s", s->keys[object], strerror(errno));
        atomic_store((_Atomic int32_t *)&o->error, EIO);
        return;
    }
    s->data_fds[object] = fd;
    atomic_store((_Atomic int32_t *)&o->error, 0); /* a failed refetch is not forever */
    ossc_fetch_item item = {s->keys[object], o->size, 0, o->size, fd, 0, NULL};
    *r = (struct refetch){s, object, NULL};
    ossc_error err;
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

/* A blocked reader wants chunk: fetch it next (or its object again, after a release). */
static void answer_reader(ossc_session *s, uint32_t chunk)
{
    ossc_session_header *h = s->hdr;
    ossc_session_object *objs = objects_of(h);
    for (uint32_t i = 0; i < s->n_data; i++) {
        ossc_session_object *o = &objs[i];
        if (chunk < o->first_chunk || chunk >= o->first_chunk + o->n_chunks)
            continue;
        uint64_t offset = (uint64_t)(chunk - o->first_chunk) * h->chunk_size;
        ossc_fetch *running = s->refetches[i].fetch;
        if (s->data_fds[i] < 0)
            refetch(s, i);
        else if (running)
            ossc_fetch_prioritize(running, 0, offset);
        else
            ossc_fetch_prioritize(s->fetch, i, offset);
        return;
    }
}

/* Answers blocked readers, beats the heartbeat, marks the end of the prefetch, releases
 * the data files on expiry, until the session stops. */
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
            answer_reader(s, atomic_load((_Atomic uint32_t *)&h->wanted_chunk));
        }
        ossc_fetch_stats st;
        ossc_fetch_stats_get(s->fetch, &st);
        if (st.finished && h->state == OSSC_SESSION_FETCHING) {
            s->complete_ms = now_ms();
            set_state(h, st.items_failed ? OSSC_SESSION_FAILED : OSSC_SESSION_COMPLETE);
        }
        bool refetching = reap_refetches(s);
        uint64_t last = atomic_load((_Atomic uint64_t *)&h->last_open_ms);
        /* Not when shared: the group's readers attach read-only and cannot ask for a file
         * again. */
        if (h->state == OSSC_SESSION_COMPLETE && h->expire_time_sec && !refetching &&
            s->group == OSSC_SESSION_PRIVATE &&
            holds_data(s) &&
            now_ms() >= (last > s->complete_ms ? last : s->complete_ms) +
                            (uint64_t)h->expire_time_sec * 1000)
            release_data(s);
    }
    return NULL;
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
        ossc_relative_name(o->key, ossc_client_prefix(s->client), &rel, err);
        char path[OSSC_MODEL_DIR_MAX + OSSC_DATA_PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", s->model_dir, rel);
        int fd = materialize_file(s->manifest_fd, path, err);
        if (fd < 0) {
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

/* Why cacheDir may not hold data files: someone else could rename or replace what we put
 * there. It must be this uid's or root's, and writable by others only if sticky (/tmp). */
static const char *cache_dir_unsafe(const char *cache)
{
    struct stat st;
    if (stat(cache, &st) != 0 || !S_ISDIR(st.st_mode))
        return "it is not a directory";
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return "another user owns it";
    if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))
        return "other users can write it (and it is not sticky)";
    return NULL;
}

/* Where the data files go: the session directory, or cacheDir (a directory of ours there,
 * checked like the session's, under a name nobody can guess and plant). The owner's pid in
 * the name keeps a dead owner's readers, which still hold its control file, from ever finding
 * a later owner's files. */
static int make_data_dir(ossc_session *s, ossc_error *err)
{
    const char *cache = s->client->s.cache_dir;
    if (*cache) {
        int rc = materialize_dirs(-1, cache, err);
        if (rc)
            return rc;
        const char *why = cache_dir_unsafe(cache);
        if (why) {
            err_set(err, OSSC_E_CONFIG, "cacheDir %s: %s; refusing to keep the model there",
                    cache, why);
            return OSSC_E_CONFIG;
        }
        uint64_t nonce = 0;
        if (getrandom(&nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
            nonce = now_ms() ^ ((uint64_t)getpid() << 32);
        snprintf(s->data_dir, sizeof(s->data_dir),
                 "%s/" OSSC_SESSION_PREFIX "%u-%016llx-%d-%016llx", cache, (unsigned)geteuid(),
                 (unsigned long long)ossc_session_hash(s->model_dir), (int)getpid(),
                 (unsigned long long)nonce);
    } else {
        snprintf(s->data_dir, sizeof(s->data_dir), "%s/data.%d", s->path, (int)getpid());
    }
    const char *why;
    int fd = session_dir_open(s->data_dir, true, s->group, &why);
    if (fd < 0) {
        err_set(err, OSSC_E_IO, "cannot use %s for the data files: %s", s->data_dir,
                why ? why : strerror(errno));
        return OSSC_E_IO;
    }
    close(fd);
    return 0;
}

static int publish(ossc_session *s, const size_t *large, size_t n, ossc_error *err)
{
    const uint64_t chunk = s->client->s.chunk_size;
    size_t names = 0;
    uint32_t n_chunks = 0;
    uint64_t bytes = 0;
    const char *prefix = ossc_client_prefix(s->client);
    for (size_t i = 0; i < n; i++) {
        const ossc_object *o = &s->listing->objects[large[i]];
        names += strlen(o->key) + 1;
        n_chunks += (uint32_t)((o->size + chunk - 1) / chunk);
        bytes += o->size;
    }
    size_t objects_off = (sizeof(ossc_session_header) + 63) & ~(size_t)63;
    size_t bits_off = objects_off + n * sizeof(ossc_session_object);
    size_t names_off = bits_off + ((n_chunks + 63) / 64) * 8;
    s->control_size = names_off + names;

    int rc = make_data_dir(s, err);
    if (rc)
        return rc;
    unlinkat(s->dir_fd, "control.new", 0);
    int fd = session_file_open(s->dir_fd, "control.new", O_RDWR | O_CREAT | O_EXCL, s->group);
    if (fd < 0 || ftruncate(fd, (off_t)s->control_size) != 0 || flock(fd, LOCK_EX) != 0) {
        err_set(err, OSSC_E_IO, "cannot create the control file in %s: %s", s->path,
                strerror(errno));
        if (fd >= 0)
            close(fd);
        return OSSC_E_IO;
    }
    s->control_fd = fd;
    void *map = mmap(NULL, s->control_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        err_set(err, OSSC_E_IO, "cannot map the control file: %s", strerror(errno));
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
    h->bytes_total = bytes;
    h->started_unix = (uint64_t)time(NULL);
    h->current_object = -1;
    snprintf(h->model_dir, sizeof(h->model_dir), "%s", s->model_dir);
    snprintf(h->log_path, sizeof(h->log_path), "%s", s->client->s.log_path);
    snprintf(h->audit_path, sizeof(h->audit_path), "%s", s->client->s.audit_path);
    snprintf(h->data_dir, sizeof(h->data_dir), "%s", s->data_dir);
    snprintf(h->oss_path, sizeof(h->oss_path), "%s", s->url);

    ossc_session_object *objs = objects_of(h);
    char *name_area = (char *)h + names_off;
    size_t name_pos = 0;
    uint32_t next_chunk = 0;
    for (size_t i = 0; i < n; i++) {
        const ossc_object *o = &s->listing->objects[large[i]];
        const char *rel;
        ossc_relative_name(o->key, prefix, &rel, err);
        size_t len = strlen(rel);
        memcpy(name_area + name_pos, rel, len + 1);
        objs[i] = (ossc_session_object){o->size, next_chunk,
                                        (uint32_t)((o->size + chunk - 1) / chunk),
                                        (uint32_t)name_pos, (uint32_t)len, 0, 0};
        next_chunk += objs[i].n_chunks;
        name_pos += len + 1;
        int dfd = create_data_file(s, i, o->size);
        if (dfd < 0) {
            err_set(err, OSSC_E_IO, "cannot create a data file in %s: %s", s->data_dir,
                    strerror(errno));
            return OSSC_E_IO;
        }
        s->data_fds[s->n_data++] = dfd;
    }
    /* Readers see the control file only once it is whole. */
    if (renameat(s->dir_fd, "control.new", s->dir_fd, "control") != 0) {
        err_set(err, OSSC_E_IO, "cannot publish the control file in %s: %s", s->path,
                strerror(errno));
        return OSSC_E_IO;
    }
    /* Only now the size-correct placeholders: whoever finds one also finds the session, so
     * no process reads a placeholder's holes as if they were the object. */
    for (size_t i = 0; i < n; i++) {
        char path[OSSC_MODEL_DIR_MAX + OSSC_DATA_PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", s->model_dir, name_area + objs[i].name_offset);
        int pfd = materialize_file(s->manifest_fd, path, err);
        /* Only the owner may open a placeholder: any other process gets EACCES, never its
         * holes (the shim serves the data file in its place, and a stat needs no access). */
        if (pfd < 0 || ftruncate(pfd, (off_t)objs[i].size) != 0 || fchmod(pfd, 0600) != 0) {
            err_set(err, OSSC_E_IO, "cannot create placeholder %s: %s", path, strerror(errno));
            if (pfd >= 0)
                close(pfd);
            return OSSC_E_IO;
        }
        close(pfd);
    }
    return 0;
}

/* The session directory is ours (its lock is held): list, materialize, publish, prefetch.
 * model_dir[from..] names the directories made for MODEL_DIR itself: they go again with it. */
static int create(ossc_session *s, const char *url, const char *model_dir, size_t from,
                  ossc_error *err)
{
    s->manifest_fd = materialize_open_manifest(s->dir_fd);
    if (s->manifest_fd < 0) {
        err_set(err, OSSC_E_IO, "cannot write in %s: %s", s->path, strerror(errno));
        return OSSC_E_IO;
    }
    for (size_t i = from + 1; from < strlen(model_dir) && i <= strlen(model_dir); i++) {
        if (model_dir[i] != '/' && model_dir[i] != '\0')
            continue;
        char dir[OSSC_MODEL_DIR_MAX];
        snprintf(dir, sizeof(dir), "%.*s", (int)i, model_dir);
        materialize_record(s->manifest_fd, 'd', dir);
    }
    s->users_fd = session_file_open(s->dir_fd, "users", O_RDONLY | O_CREAT | O_EXCL, s->group);
    if (s->users_fd < 0) {
        err_set(err, OSSC_E_IO, "cannot create the users file in %s: %s", s->path,
                strerror(errno));
        return OSSC_E_IO;
    }
    int rc;
    /* The store first: bad credentials or a wrong path leave MODEL_DIR as it was. */
    if ((rc = ossc_list(s->client, NULL, &s->listing, err)) || (rc = check_listing(s, url, err)) ||
        (rc = materialize_check_empty(s->model_dir, s->client->s.allow_non_empty, err)))
        return rc;

    size_t n = s->listing->count, n_small = 0, n_large = 0;
    size_t *order = malloc((n ? n : 1) * 2 * sizeof(*order));
    s->data_fds = malloc((n ? n : 1) * sizeof(int));
    s->keys = malloc((n ? n : 1) * sizeof(*s->keys));
    s->refetches = calloc(n ? n : 1, sizeof(*s->refetches));
    ossc_fetch_item *items = calloc(n ? n : 1, sizeof(*items));
    if (!order || !s->data_fds || !s->keys || !s->refetches || !items) {
        err_set(err, OSSC_E_NOMEM, "out of memory");
        rc = OSSC_E_NOMEM;
        goto out;
    }
    size_t *small = order + n, *large = order;
    for (size_t i = 0; i < n; i++) {
        const char *rel;
        if ((rc = ossc_relative_name(s->listing->objects[i].key, ossc_client_prefix(s->client),
                                     &rel, err)))
            goto out;
        if (!rel)
            continue;
        char path[OSSC_MODEL_DIR_MAX + OSSC_DATA_PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", s->model_dir, rel);
        *strrchr(path, '/') = '\0';
        if ((rc = materialize_dirs(s->manifest_fd, path, err)))
            goto out;
        if (s->listing->objects[i].size < s->client->s.small_file_size)
            small[n_small++] = i;
        else
            large[n_large++] = i;
    }
    if ((rc = fetch_small(s, small, n_small, err)))
        goto out;
    order_by_index(s, large, n_large);
    if ((rc = publish(s, large, n_large, err)))
        goto out;
    for (size_t i = 0; i < n_large; i++) {
        const ossc_object *o = &s->listing->objects[large[i]];
        items[i] = (ossc_fetch_item){o->key, o->size, 0, o->size, s->data_fds[i], 0, NULL};
        s->keys[i] = o->key;
    }
    s->fetch = ossc_fetch_start(s->client, items, n_large, on_chunk, s, err);
    if (!s->fetch) {
        rc = err->code;
        goto out;
    }
    if (pthread_create(&s->helper, NULL, helper_main, s) == 0)
        s->helper_started = true;
    LOGI("session %s: %zu small files in %s, prefetching %zu large ones", s->path, n_small,
         s->model_dir, n_large);
out:
    free(order);
    free(items);
    return rc;
}

/* Another owner holds the directory: wait until it has published, then attach to it if it
 * serves the same store path. 0 attached, TAKEN (its owner died), NEXT_NAME, or an error. */
static int join_live(ossc_session *s, int dirfd, ossc_error *err)
{
    uint64_t deadline = now_ms() + (uint64_t)s->client->s.read_timeout_sec * 1000;
    for (;;) {
        if (flock(dirfd, LOCK_EX | LOCK_NB) == 0)
            return TAKEN;
        ossc_session_header h;
        int fd = session_file_open(dirfd, "control", O_RDONLY, s->group);
        bool read_ok = fd >= 0 && pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
                       h.magic == OSSC_SESSION_MAGIC && h.version == OSSC_SESSION_VERSION;
        if (fd >= 0)
            close(fd);
        if (read_ok && h.state != OSSC_SESSION_CREATING && h.state != OSSC_SESSION_ENDED) {
            h.model_dir[sizeof(h.model_dir) - 1] = h.oss_path[sizeof(h.oss_path) - 1] = '\0';
            if (strcmp(h.model_dir, s->model_dir) != 0)
                return NEXT_NAME;
            if (strcmp(h.oss_path, s->url) != 0) {
                err_set(err, OSSC_E_CONFLICT, "MODEL_DIR %s is already served from %s (owner "
                        "pid %u); refusing to serve %s there: use another MODEL_DIR",
                        s->model_dir, h.oss_path, h.owner_pid, s->url);
                return OSSC_E_CONFLICT;
            }
            return 0;
        }
        if (now_ms() > deadline) {
            err_set(err, OSSC_E_IO, "the owner of %s did not publish its session within "
                    "readTimeoutSec", s->path);
            return OSSC_E_IO;
        }
        sleep_ms(LIVE_POLL_MS);
    }
}

/* Finds or takes the session directory for s->model_dir: 0 attached, TAKEN, or an error. */
static int take_directory(ossc_session *s, ossc_error *err)
{
    for (int c = 0; c < OSSC_SESSION_CANDIDATES; c++) {
        ossc_session_name(s->path, sizeof(s->path), OSSC_SESSION_ROOT, (unsigned)geteuid(),
                          s->group, s->model_dir, c);
        const char *why;
        int dirfd = session_dir_open(s->path, true, s->group, &why);
        if (dirfd < 0) {
            if (!why) {
                err_set(err, OSSC_E_IO, "cannot create %s: %s", s->path, strerror(errno));
                return OSSC_E_IO;
            }
            LOGW("ignoring %s: %s; using the next name", s->path, why);
            continue;
        }
        int rc = flock(dirfd, LOCK_EX | LOCK_NB) == 0 ? TAKEN : join_live(s, dirfd, err);
        struct stat st;
        if (rc == TAKEN && (fstat(dirfd, &st) != 0 || st.st_uid != geteuid()))
            rc = NEXT_NAME; /* a dead owner's of the group: not ours to clear */
        if (rc == TAKEN) {
            s->dir_fd = dirfd;
            return TAKEN;
        }
        close(dirfd);
        if (rc != NEXT_NAME)
            return rc;
    }
    err_set(err, OSSC_E_IO, "no usable session directory for %s in " OSSC_SESSION_ROOT
            " (every candidate name is taken by someone else)", s->model_dir);
    return OSSC_E_IO;
}

/* mkdir -p MODEL_DIR; *existing: the length of its deepest ancestor that was there already
 * (what lies below it, the session created, and removes again). */
static int make_model_dir(const char *model_dir, size_t *existing, ossc_error *err)
{
    char path[OSSC_MODEL_DIR_MAX];
    snprintf(path, sizeof(path), "%s", model_dir);
    while (access(path, F_OK) != 0 && strrchr(path, '/') != path)
        *strrchr(path, '/') = '\0';
    *existing = strlen(path);
    return materialize_dirs(-1, model_dir, err);
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
    s->dir_fd = s->users_fd = s->manifest_fd = s->control_fd = -1;
    int rc = OSSC_E_CONFIG;
    if (!model_dir || model_dir[0] != '/') {
        err_set(err, OSSC_E_CONFIG, "MODEL_DIR must be an absolute path, not '%s'",
                model_dir ? model_dir : "");
        goto fail;
    }
    if (!(s->client = ossc_client_new(url, overrides, n_overrides, err)))
        goto fail;
    if ((rc = session_group(s->client->s.shared_group, &s->group, err)))
        goto fail;
    snprintf(s->url, sizeof(s->url), "%s://%s/%s",
             s->client->url.scheme == SCHEME_S3 ? "s3" : "oss", s->client->url.bucket,
             s->client->url.prefix);
    size_t existing;
    if ((rc = make_model_dir(model_dir, &existing, err)))
        goto fail;
    char real[PATH_MAX];
    if (!realpath(model_dir, real)) {
        err_set(err, OSSC_E_IO, "cannot resolve MODEL_DIR %s: %s", model_dir, strerror(errno));
        rc = OSSC_E_IO;
        goto fail;
    }
    snprintf(s->model_dir, sizeof(s->model_dir), "%s", real);
    rc = take_directory(s, err);
    if (rc == 0) {
        LOGI("attaching to the live session %s for %s", s->path, s->model_dir);
        s->attached = true;
        return s;
    }
    if (rc != TAKEN)
        goto fail;
    session_dir_clear(s->dir_fd, s->path); /* a dead owner's leftovers, its MODEL_DIR too */
    size_t now_existing;
    if ((rc = make_model_dir(model_dir, &now_existing, err)) ||
        (rc = create(s, url, model_dir, existing < now_existing ? existing : now_existing,
                     err)))
        goto fail;
    return s;
fail:
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

OSSC_API int ossc_session_attached(const ossc_session *s) { return s->attached; }

OSSC_API const char *ossc_session_item_name(const ossc_session *s, size_t item)
{
    if (!s->hdr || item >= s->n_data)
        return NULL;
    const ossc_session_object *o = &objects_of(s->hdr)[item];
    return (const char *)s->hdr + s->hdr->names_offset + o->name_offset;
}

OSSC_API void ossc_session_request_end(ossc_session *s) { atomic_store(&s->stopping, true); }

OSSC_API void ossc_session_serve(ossc_session *s)
{
    if (s->attached || !s->hdr)
        return;
    uint64_t linger = (uint64_t)s->hdr->expire_time_sec * 1000;
    if (linger < OSSC_SESSION_LINGER_MIN_MS)
        linger = OSSC_SESSION_LINGER_MIN_MS;
    uint64_t idle_since = now_ms();
    while (!atomic_load(&s->stopping)) {
        sleep_ms(SERVE_TICK_MS);
        /* LOCK_EX is free only when no process holds the users file; let go at once, so
         * a process attaching now does not wait on us. */
        if (flock(s->users_fd, LOCK_EX | LOCK_NB) != 0) {
            idle_since = now_ms();
            continue;
        }
        if (now_ms() < idle_since + linger) {
            flock(s->users_fd, LOCK_UN);
            continue;
        }
        LOGI("session %s: no process has used it for %llu s; ending it", s->path,
             (unsigned long long)(linger / 1000));
        return; /* LOCK_EX kept: a process that attaches now waits, then sees it ended */
    }
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
    bool removing = remove && !s->attached && s->dir_fd >= 0;
    if (s->hdr) {
        if (removing)
            set_state(s->hdr, OSSC_SESSION_ENDED); /* attach to nothing, start anew */
        else if (s->hdr->state == OSSC_SESSION_FETCHING)
            set_state(s->hdr, OSSC_SESSION_FAILED); /* nobody will fetch the rest */
    }
    for (size_t i = 0; i < s->n_data; i++)
        if (s->data_fds[i] >= 0)
            close(s->data_fds[i]);
    if (s->manifest_fd >= 0)
        close(s->manifest_fd);
    if (removing) {
        session_dir_clear(s->dir_fd, s->path);
        rmdir(s->path);
    }
    if (s->hdr)
        munmap(s->hdr, s->control_size);
    if (s->control_fd >= 0)
        close(s->control_fd);
    if (s->users_fd >= 0)
        close(s->users_fd);
    if (s->dir_fd >= 0)
        close(s->dir_fd); /* the directory lock goes last */
    free(s->data_fds);
    free(s->keys);
    free(s->refetches);
    ossc_listing_free(s->listing);
    ossc_client_free(s->client);
    free(s);
}
