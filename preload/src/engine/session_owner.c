/* session_owner.c: the owner of a session (run by ossc-owner, never inside the application).
 * Takes the session directory for MODEL_DIR (or finds the live owner already serving it),
 * lists the store, materializes MODEL_DIR, publishes the control file and data files
 * (session_control.c), prefetches the large objects into them and starts the helper thread
 * (session_expiry.c). ossc_session_serve returns once no process has used the session for
 * max(expireTimeSec, OSSC_SESSION_LINGER_MIN_MS); ossc_session_stop removes it. */
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
#include <time.h>
#include <unistd.h>

#include "session.h"

#define SERVE_TICK_MS 200
#define LIVE_POLL_MS 50
#define TAKEN (-1)     /* the session directory is ours: create the session */
#define NEXT_NAME (-2) /* it serves another MODEL_DIR (a hash collision) */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
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

static void on_chunk(void *ctx, size_t item, uint64_t offset, uint64_t length, int status)
{
    /* fetch item i is object i */
    session_chunk_landed(ctx, (uint32_t)item, offset, length, status);
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
    s->use = calloc(n ? n : 1, sizeof(*s->use));
    s->fetched = calloc(n ? n : 1, sizeof(*s->fetched));
    ossc_fetch_item *items = calloc(n ? n : 1, sizeof(*items));
    uint64_t *sizes = calloc(n ? n : 1, sizeof(*sizes));
    if (!order || !s->data_fds || !s->keys || !s->refetches || !s->use || !s->fetched ||
        !items || !sizes) {
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
    /* The control file's chunk map and the fetch must cut the objects alike. A lazy session
     * fetches one object at a time, as it is opened: its chunks are cut for the largest
     * object alone, so that one open keeps every transfer busy. */
    uint64_t large_bytes = 0, largest = 0;
    for (size_t i = 0; i < n_large; i++) {
        sizes[i] = s->listing->objects[large[i]].size;
        large_bytes += sizes[i];
        largest = sizes[i] > largest ? sizes[i] : largest;
    }
    bool lazy = s->client->s.fetch_policy == OSSC_FETCH_LAZY;
    s->client->s.chunk_size = fetch_chunk_size(s->client, lazy ? largest : large_bytes);
    s->client->s.derived &= ~DERIVED_CHUNK_SIZE;
    if ((rc = session_plan_cache(s, sizes, n_large, err)) ||
        (rc = session_publish(s, large, n_large, err)))
        goto out;
    session_audit_open(s);
    for (size_t i = 0; i < n_large; i++) {
        const ossc_object *o = &s->listing->objects[large[i]];
        items[i] = (ossc_fetch_item){o->key, o->size, 0, o->size, s->data_fds[i], 0, NULL};
        s->keys[i] = o->key;
        s->fetched[i] = i < s->n_eager;
        if (i < s->n_eager)
            session_audit(s, i, "fetch", "prefetch");
    }
    /* Fetch item i is object i: the prefetch is the prefix [0, n_eager) of the order. */
    s->fetch = ossc_fetch_start(s->client, items, s->n_eager, on_chunk, s, err);
    if (!s->fetch) {
        rc = err->code;
        goto out;
    }
    if (pthread_create(&s->helper, NULL, session_helper_main, s) == 0)
        s->helper_started = true;
    LOGI("session %s: %zu small files in %s, prefetching %zu of %zu large ones", s->path,
         n_small, s->model_dir, s->n_eager, n_large);
out:
    free(order);
    free(items);
    free(sizes);
    return rc;
}

/* Another process holds the directory: wait until a live owner has published, then attach to
 * it if it serves the same store path. 0 attached, TAKEN (its owner died), NEXT_NAME, or an
 * error. The holder may be a guardian reaping a dead owner's session, whose control file
 * still reads as published: only the owner's lock on it says somebody serves it. */
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
        if (read_ok && h.state != OSSC_SESSION_CREATING && h.state != OSSC_SESSION_ENDED &&
            session_owner_alive(dirfd, s->group)) {
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
    s->dir_fd = s->users_fd = s->manifest_fd = s->control_fd = s->audit_fd = -1;
    int rc = OSSC_E_CONFIG;
    if (!model_dir || model_dir[0] != '/') {
        err_set(err, OSSC_E_CONFIG, "MODEL_DIR must be an absolute path, not '%s'",
                model_dir ? model_dir : "");
        goto fail;
    }
    /* A prefix names a directory, with or without its '/' (as aws s3 cp and ossc get). */
    char prefix_url[sizeof(s->url)];
    const char *path = url ? strstr(url, "://") : NULL;
    path = path ? strchr(path + 3, '/') : NULL;
    if (path && path[1] && url[strlen(url) - 1] != '/') {
        snprintf(prefix_url, sizeof(prefix_url), "%s/", url);
        url = prefix_url;
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
    if (!s->fetch)
        return 0;
    return ossc_fetch_wait(s->fetch, timeout_ms, err);
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
    const ossc_session_object *o = &session_objects(s->hdr)[item];
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
        session_futex(&s->hdr->wanted, FUTEX_WAKE, 1, NULL); /* now, not at its next tick */
        pthread_join(s->helper, NULL);
    }
    ossc_fetch_free(s->fetch);
    for (size_t i = 0; s->refetches && i < s->n_data; i++)
        ossc_fetch_free(s->refetches[i].fetch);
    bool removing = remove && !s->attached && s->dir_fd >= 0;
    if (s->hdr) {
        if (removing)
            session_set_state(s->hdr, OSSC_SESSION_ENDED); /* attach to nothing, start anew */
        else if (s->hdr->state == OSSC_SESSION_FETCHING)
            session_set_state(s->hdr, OSSC_SESSION_FAILED); /* nobody will fetch the rest */
    }
    for (size_t i = 0; i < s->n_data; i++)
        if (s->data_fds[i] >= 0)
            close(s->data_fds[i]);
    if (s->manifest_fd >= 0)
        close(s->manifest_fd);
    if (s->audit_fd >= 0)
        close(s->audit_fd);
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
    free(s->use);
    free(s->fetched);
    ossc_listing_free(s->listing);
    ossc_client_free(s->client);
    free(s);
}
