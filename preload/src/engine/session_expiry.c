/* session_expiry.c: the owner's helper thread, which serves a published session: it beats
 * the heartbeat, answers blocked readers (the `wanted` futex) by moving their chunk forward,
 * marks the end of the prefetch, releases the data files expireTimeSec after the last open
 * (private sessions only), keeps them under cacheLimit (session_budget.c), fetches an
 * object not held (released, never fetched: lazy, or failed) when a reader opens or reads
 * it, and retires the data file of a failed fetch so that a later open fetches it again. */
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "session.h"

#define HEARTBEAT_MS 100

static void on_refetch_chunk(void *ctx, size_t item, uint64_t offset, uint64_t length,
                             int status)
{
    struct refetch *r = ctx;
    (void)item;
    session_chunk_landed(r->s, r->object, offset, length, status);
}

static void set_ready_bits(ossc_session_header *h, const ossc_session_object *o, bool ready)
{
    for (uint32_t c = o->first_chunk; c < o->first_chunk + o->n_chunks; c++) {
        _Atomic uint64_t *word = (_Atomic uint64_t *)&session_bits(h)[c / 64];
        if (ready)
            atomic_fetch_or(word, 1ULL << (c % 64));
        else
            atomic_fetch_and(word, ~(1ULL << (c % 64)));
    }
}

/* The data file goes (open fds and mappings keep their pages). Ready bits are cleared before
 * the unlink, so a reader that finds no file also finds no chunk and asks for it, which
 * fetches the object again. A file that cannot be unlinked stays as it is: it is never
 * truncated or rewritten under a reader. */
bool session_release_object(ossc_session *s, size_t i, const char *why)
{
    ossc_session_header *h = s->hdr;
    ossc_session_object *o = &session_objects(h)[i];
    set_ready_bits(h, o, false);
    atomic_store((_Atomic uint32_t *)&o->chunks_ready, 0);
    char path[OSSC_DATA_PATH_MAX];
    session_data_path(s, i, path, sizeof(path));
    if (unlink(path) != 0) {
        LOGW("cannot release %s: %s; keeping it", path, strerror(errno));
        set_ready_bits(h, o, true);
        atomic_store((_Atomic uint32_t *)&o->chunks_ready, o->n_chunks);
        return false;
    }
    close(s->data_fds[i]);
    s->data_fds[i] = -1;
    session_audit(s, i, "release", why);
    return true;
}

/* expireTimeSec after the last open: every complete data file goes (a failed one is
 * retired_failed's). */
static void release_data(ossc_session *s)
{
    size_t released = 0;
    for (size_t i = 0; i < s->n_data; i++)
        if (s->data_fds[i] >= 0 && session_object_complete(s, i) &&
            session_release_object(s, i, "expireTimeSec"))
            released++;
    session_wake_readers(s->hdr);
    LOGI("session %s: released %zu data files %u s after the last open", s->path, released,
         s->hdr->expire_time_sec);
}

/* Whether any complete data file is still here (none after a release, until a reader
 * asks). */
static bool holds_data(const ossc_session *s)
{
    for (size_t i = 0; i < s->n_data; i++)
        if (s->data_fds[i] >= 0 && session_object_complete(s, i))
            return true;
    return false;
}

static bool reap_refetches(ossc_session *s);

static void refetch(ossc_session *s, uint32_t object)
{
    struct refetch *r = &s->refetches[object];
    if (r->fetch || s->data_fds[object] >= 0)
        return; /* running, or its file is back already */
    ossc_session_object *o = &session_objects(s->hdr)[object];
    reap_refetches(s); /* what has landed since the last tick may be released */
    session_budget_keep(s, o->size); /* room first: release what nobody holds */
    int fd = session_create_data_file(s, object, o->size);
    if (fd < 0) {
        LOGE("cannot create the data file of %s again: %s", s->keys[object], strerror(errno));
        session_object_failed(s->hdr, o, EIO);
        session_wake_readers(s->hdr);
        return;
    }
    s->data_fds[object] = fd;
    atomic_fetch_add((_Atomic uint64_t *)&s->hdr->bytes_held, o->size); /* status: now */
    /* A failed fetch is not forever: this one may succeed (objects_failed counts the objects
     * whose last fetch failed). */
    if (atomic_exchange((_Atomic int32_t *)&o->error, 0))
        atomic_fetch_sub((_Atomic uint32_t *)&s->hdr->objects_failed, 1);
    session_wake_readers(s->hdr); /* an open waiting for the file returns now */
    session_audit(s, object, "fetch", s->fetched[object] ? "refetch" : "open");
    s->fetched[object] = true;
    s->use[object] = now_ms();
    ossc_fetch_item item = {s->keys[object], o->size, 0, o->size, fd, 0, NULL};
    *r = (struct refetch){s, object, NULL, false};
    ossc_error err;
    r->fetch = ossc_fetch_start(s->client, &item, 1, on_refetch_chunk, r, &err);
    if (!r->fetch) {
        LOGE("%s: %s", s->keys[object], err.message);
        session_object_failed(s->hdr, o, EIO);
        session_wake_readers(s->hdr);
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
            s->use[i] = now_ms();
            s->complete_ms = now_ms(); /* expiry counts again from here */
        } else {
            running = true;
        }
    }
    return running;
}

/* The data file of object i once its fetch failed and nothing writes it any more: it goes,
 * so that the next open fetches the object anew, unless a reader holds it. Every open of a
 * data file takes LOCK_SH on it (the shim's session.c), and gives it up again if the file
 * was unlinked meanwhile: with LOCK_EX taken, no reader has it or can get it. A held one
 * stays as it is, its missing ranges failing with the object's error; it would read as
 * zeros where it has holes once the ready bits, cleared here, were set by a new file. Not
 * when shared: the group's readers cannot ask for a file again. */
static bool retire_failed(ossc_session *s, size_t i)
{
    ossc_session_object *o = &session_objects(s->hdr)[i];
    if (s->data_fds[i] < 0 || !atomic_load((_Atomic int32_t *)&o->error) ||
        session_object_written(s, i) ||
        s->group != OSSC_SESSION_PRIVATE || flock(s->data_fds[i], LOCK_EX | LOCK_NB) != 0)
        return false;
    set_ready_bits(s->hdr, o, false);
    atomic_store((_Atomic uint32_t *)&o->chunks_ready, 0);
    char path[OSSC_DATA_PATH_MAX];
    session_data_path(s, i, path, sizeof(path));
    if (unlink(path) != 0) /* then the next fetch cannot create it, and says so */
        LOGW("cannot remove %s after its failed fetch: %s", path, strerror(errno));
    close(s->data_fds[i]); /* and the lock */
    s->data_fds[i] = -1;
    session_audit(s, i, "release", "failed");
    session_wake_readers(s->hdr);
    return true;
}

/* A blocked reader wants chunk: fetch it next (or its object again, after a release or a
 * failed fetch). */
static void answer_reader(ossc_session *s, uint32_t chunk)
{
    ossc_session_header *h = s->hdr;
    ossc_session_object *objs = session_objects(h);
    for (uint32_t i = 0; i < s->n_data; i++) {
        ossc_session_object *o = &objs[i];
        if (chunk < o->first_chunk || chunk >= o->first_chunk + o->n_chunks)
            continue;
        uint64_t offset = (uint64_t)(chunk - o->first_chunk) * h->chunk_size;
        reap_refetches(s); /* a failed refetch that just ended is retired at once */
        retire_failed(s, i);
        struct refetch *r = &s->refetches[i];
        if (s->data_fds[i] < 0) {
            refetch(s, i);
        } else if (atomic_load((_Atomic int32_t *)&o->error)) {
            /* Failed, and not retired yet: its refetch's other transfers run on (stopped
             * here: they feed nobody), the prefetch's do, or a reader holds the file. The
             * helper fetches it again once it is retired. */
            r->wanted = true;
            if (r->fetch && ossc_fetch_item_error(r->fetch, 0, NULL))
                ossc_fetch_cancel(r->fetch);
        } else if (r->fetch) {
            ossc_fetch_prioritize(r->fetch, 0, offset);
        } else {
            ossc_fetch_prioritize(s->fetch, i, offset);
        }
        return;
    }
}

/* Answers blocked readers, beats the heartbeat, marks the end of the prefetch, releases
 * the data files on expiry, until the session stops. */
void *session_helper_main(void *arg)
{
    ossc_session *s = arg;
    ossc_session_header *h = s->hdr;
    uint32_t seen = atomic_load((_Atomic uint32_t *)&h->wanted);
    struct timespec tick = {0, HEARTBEAT_MS * 1000000L};
    while (!atomic_load(&s->stopping)) {
        atomic_store((_Atomic uint64_t *)&h->heartbeat_ms, now_ms());
        session_futex(&h->wanted, FUTEX_WAIT, seen, &tick);
        uint32_t now = atomic_load((_Atomic uint32_t *)&h->wanted);
        if (now != seen) {
            seen = now;
            answer_reader(s, atomic_load((_Atomic uint32_t *)&h->wanted_chunk));
        }
        ossc_fetch_stats st;
        ossc_fetch_stats_get(s->fetch, &st);
        /* Complete even if some objects failed: each has its error (and objects_failed
         * counts them); the others are served, fetched again or released as usual. FAILED
         * is for a prefetch that stopped (ossc_session_stop). */
        if (st.finished && h->state == OSSC_SESSION_FETCHING) {
            s->complete_ms = now_ms();
            session_set_state(h, OSSC_SESSION_COMPLETE);
        }
        bool refetching = reap_refetches(s);
        for (size_t i = 0; i < s->n_data; i++)
            if (retire_failed(s, i) && s->refetches[i].wanted)
                refetch(s, i);
        session_budget_keep(s, 0);
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
