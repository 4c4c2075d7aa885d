/* fetch.c: the parallel ranged-GET engine.
 *
 * Items (byte ranges of objects) are cut into chunks of chunkSize. An item whose fd is a tmpfs
 * file is written through one shared mapping when the fetch runs enough threads, each 32 MiB
 * span of it once its pages are reserved (sink_map.c; a few threads reserve ahead of the
 * transfers); others, and spans that could not be reserved, with pwrite. A queue holds the
 * chunks in the caller's order; up to prefetch.vcpus threads (one per prefetch.workers chunks)
 * each run one curl multi handle with prefetch.workers transfers in flight, taking chunks from
 * the front. A failed attempt goes back to the front after a backoff and resumes where it
 * stopped; every reply's status and Content-Range are checked before a byte is written. A
 * whole-object item whose store sent x-oss-hash-crc64ecma is verified when its last chunk
 * lands, and refetched once on mismatch; with verifyBeforeRead its chunks are reported
 * (on_chunk) only after it verified.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "internal.h"

#define RECV_BUFFER_SIZE (512L << 10)
#define IDLE_POLL_MS 50
#define MAX_REFETCHES 1
#define NO_CHUNK UINT32_MAX
/* Mappings (sink_map.c) only for fetches of this many threads: fewer never wait long on a tmpfs
 * file's lock, and pwrite costs less CPU than a page fault per 4 KiB (on 2 cores a mapping
 * cost 1.4x the CPU at the same speed) or making huge pages (1.6x the CPU, 0.6x the speed). */
#define MAP_MIN_THREADS 4
/* Threads that reserve items' pages ahead of their transfers, span by span in the items' order:
 * one thread reserves about 5 GB/s (huge pages, 16 cores), so a few run at once, on one
 * file or several. Reserved ahead, a transfer finds its span ready instead of waiting for, or
 * serializing with, its reservation (docs/BENCHMARKS.md). */
#define RESERVE_AHEAD_THREADS 4
/* The unit of reservation: a transfer waits for the spans it writes, not for its whole item.
 * As large as the largest default chunk, so a chunk waits for one span (16 cores: 1.03x the
 * speed of 64 MiB spans, 16 MiB no better). */
#define RESERVE_SPAN (32ULL << 20)
_Static_assert(RECV_BUFFER_SIZE <= RESERVE_SPAN, "one write of curl's would cross three spans");
/* ... and no further ahead than this many windows of transfers in flight: reserved pages are
 * taken from the tmpfs (and a cacheLimit) before their bytes land. */
#define RESERVE_AHEAD_WINDOWS 2

enum chunk_state { CH_QUEUED, CH_ACTIVE, CH_DONE, CH_DROPPED };

typedef struct chunk {
    uint32_t item;
    uint32_t prev, next;      /* queue links while queued */
    enum chunk_state state;
    int attempts;             /* failed attempts so far */
    uint64_t offset, length;  /* within the object */
    uint64_t done;            /* bytes in the sink, from offset on */
    uint64_t crc;             /* CRC-64 of those bytes */
    bool crc_valid;           /* every attempt carried the object's CRC */
    bool held;                /* landed, reported only once the object's CRC-64 verifies */
    uint64_t not_before_ms;   /* backoff */
} chunk;

/* Whether an item is written through a mapping (sink_map.c): mapped by whichever comes first,
 * a reserve-ahead thread or a transfer (MAP_OPENING: the others wait); MAP_NONE writes with
 * pwrite. Mapped, each span of it is reserved by one thread (a reserve-ahead thread, or a
 * transfer that needs it first) and written through the mapping once SPAN_RESERVED, with
 * pwrite if it could not be (SPAN_FAILED: ENOSPC, which pwrite then reports cleanly). */
enum map_state { MAP_NONE, MAP_UNDECIDED, MAP_OPENING, MAP_OPEN };
enum span_state { SPAN_FREE, SPAN_TAKEN, SPAN_RESERVED, SPAN_FAILED };

typedef struct span {
    atomic_int state;         /* enum span_state */
    uint32_t item;
} span;

typedef struct item_state {
    ossc_fetch_item it;       /* key is our copy */
    uint32_t first_chunk, n_chunks, chunks_done;
    bool finished, failed;
    int refetches;
    sink_map map;             /* a tmpfs fd's range, mapped while it is fetched (sink_map.c) */
    uint64_t fetch_offset;    /* the bytes of the items before it */
    atomic_int map_state;     /* enum map_state; map is set before MAP_OPEN is stored */
    uint32_t first_span;      /* its spans in the fetch's, when mapped */
    uint64_t object_crc;      /* from the store, if it sent one */
    bool has_object_crc;
    ossc_error err;
} item_state;

typedef struct slot {
    struct worker *w;
    CURL *easy;
    uint32_t chunk;           /* NO_CHUNK when idle */
    request req;
    reply rp;
    bool checked;             /* the reply's headers were validated */
    bool accepting;           /* a 206 whose range is right: its body goes to the sink */
    int abort_code;           /* why the write callback stopped the transfer */
    int abort_errno;
    char abort_msg[256];
    char range[64];
    char curl_err[CURL_ERROR_SIZE];
} slot;

typedef struct worker {
    ossc_fetch *f;
    pthread_t thread;
    CURLM *multi;
    slot *slots;
    int n_active;
} worker;

struct ossc_fetch {
    ossc_client *client;
    ossc_chunk_cb on_chunk;
    void *ctx;
    item_state *items;
    size_t n_items;
    chunk *chunks;
    uint32_t n_chunks;
    worker *workers;
    int n_workers;
    uint64_t chunk_size;

    pthread_mutex_t lock;     /* guards the queue, chunk states and item states */
    pthread_cond_t changed;
    uint32_t head, tail;      /* the queue */
    uint32_t active;          /* chunks in flight, all threads */
    size_t items_open;        /* items neither finished nor failed */
    atomic_bool cancelled;
    ossc_error first_error;

    pthread_t reservers[RESERVE_AHEAD_THREADS]; /* reserving spans ahead (reserve_ahead_main) */
    int n_reservers;
    span *spans;              /* of the mapped items, in their order */
    uint32_t n_spans;
    atomic_uint next_to_reserve; /* the spans taken in order by the reserve-ahead threads */
    uint64_t reserve_ahead_bytes; /* how far past the bytes landed an item may be reserved */

    atomic_uint_fast64_t bytes_done;
    atomic_uint_fast64_t requests;
    atomic_uint_fast64_t retries;
    atomic_int_fast64_t current_item;
    uint64_t bytes_total;
    size_t items_done, items_failed;
};

/* ---- the queue (callers hold f->lock) ---- */

static void queue_unlink(ossc_fetch *f, uint32_t i)
{
    chunk *c = &f->chunks[i];
    if (c->prev != NO_CHUNK)
        f->chunks[c->prev].next = c->next;
    else
        f->head = c->next;
    if (c->next != NO_CHUNK)
        f->chunks[c->next].prev = c->prev;
    else
        f->tail = c->prev;
    c->prev = c->next = NO_CHUNK;
}

static void queue_push(ossc_fetch *f, uint32_t i, bool front)
{
    chunk *c = &f->chunks[i];
    c->state = CH_QUEUED;
    if (front) {
        c->prev = NO_CHUNK;
        c->next = f->head;
        if (f->head != NO_CHUNK)
            f->chunks[f->head].prev = i;
        else
            f->tail = i;
        f->head = i;
    } else {
        c->next = NO_CHUNK;
        c->prev = f->tail;
        if (f->tail != NO_CHUNK)
            f->chunks[f->tail].next = i;
        else
            f->head = i;
        f->tail = i;
    }
}

/* The first chunk whose backoff has passed; *wait_ms says how long until one will be due. */
static uint32_t queue_pop_due(ossc_fetch *f, uint64_t now, long *wait_ms)
{
    for (uint32_t i = f->head; i != NO_CHUNK; i = f->chunks[i].next) {
        chunk *c = &f->chunks[i];
        if (c->not_before_ms <= now) {
            queue_unlink(f, i);
            c->state = CH_ACTIVE;
            f->active++;
            return i;
        }
        long w = (long)(c->not_before_ms - now);
        if (w < *wait_ms)
            *wait_ms = w;
    }
    return NO_CHUNK;
}

/* ---- item completion (callers hold f->lock) ---- */

static void item_finish(ossc_fetch *f, item_state *is)
{
    is->finished = true;
    f->items_open--;
    f->items_done++;
    pthread_cond_broadcast(&f->changed);
}

static void item_fail(ossc_fetch *f, uint32_t item, const ossc_error *err)
{
    item_state *is = &f->items[item];
    if (is->finished || is->failed)
        return;
    is->failed = true;
    is->err = *err;
    for (uint32_t k = 0; k < is->n_chunks; k++) {
        chunk *c = &f->chunks[is->first_chunk + k];
        if (c->state == CH_QUEUED) {
            queue_unlink(f, is->first_chunk + k);
            c->state = CH_DROPPED;
        }
    }
    f->items_open--;
    f->items_failed++;
    if (!f->first_error.code)
        f->first_error = *err;
    if (err->code != OSSC_E_CANCELLED)
        LOGE("%s", err->message);
    if (f->on_chunk)
        f->on_chunk(f->ctx, item, is->it.offset, is->it.length, err->code);
    pthread_cond_broadcast(&f->changed);
}

/* All chunks of an item are in: verify the whole object's CRC where the store gave one. */
static void item_complete(ossc_fetch *f, uint32_t item)
{
    item_state *is = &f->items[item];
    bool whole = is->it.offset == 0 && is->it.length == is->it.object_size;
    bool checkable = whole && is->has_object_crc;
    uint64_t crc = 0;
    for (uint32_t k = 0; checkable && k < is->n_chunks; k++) {
        chunk *c = &f->chunks[is->first_chunk + k];
        checkable = c->crc_valid;
        crc = ossc_crc64_combine(crc, c->crc, c->length);
    }
    if (!checkable || crc == is->object_crc) {
        for (uint32_t k = 0; k < is->n_chunks; k++) {
            chunk *c = &f->chunks[is->first_chunk + k];
            if (c->held && f->on_chunk)
                f->on_chunk(f->ctx, c->item, c->offset, c->length, 0);
            c->held = false;
        }
        item_finish(f, is);
        atomic_store(&is->map_state, MAP_NONE);
        sink_map_close(&is->map); /* no transfer of it is left to write there */
        return;
    }
    ossc_error e;
    err_clear(&e);
    if (is->refetches >= MAX_REFETCHES) {
        err_set(&e, OSSC_E_INTEGRITY, "%s: CRC-64 mismatch after %d refetch%s (store says %llu, "
                "got %llu)", is->it.key, is->refetches, is->refetches == 1 ? "" : "es",
                (unsigned long long)is->object_crc, (unsigned long long)crc);
        item_fail(f, item, &e);
        return;
    }
    LOGW("%s: CRC-64 mismatch (store says %llu, got %llu); fetching it again", is->it.key,
         (unsigned long long)is->object_crc, (unsigned long long)crc);
    is->refetches++;
    is->chunks_done = 0;
    for (uint32_t k = 0; k < is->n_chunks; k++) {
        chunk *c = &f->chunks[is->first_chunk + k];
        atomic_fetch_sub(&f->bytes_done, c->done);
        c->done = c->crc = 0;
        c->held = false;
        c->attempts = 0;
        c->not_before_ms = 0;
        queue_push(f, is->first_chunk + k, true);
    }
    atomic_fetch_add(&f->retries, 1);
}

/* ---- transfers ---- */

static void slot_abort(slot *s, int code, int sys_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void slot_abort(slot *s, int code, int sys_errno, const char *fmt, ...)
{
    s->abort_code = code;
    s->abort_errno = sys_errno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->abort_msg, sizeof(s->abort_msg), fmt, ap);
    va_end(ap);
}

/* The first body bytes arrived: is this the range we asked for, of the object we listed? */
static bool check_reply(slot *s, chunk *c, item_state *is)
{
    reply *rp = &s->rp;
    uint64_t start = c->offset + c->done, end = c->offset + c->length - 1;
    if (rp->status != 206) {
        if (rp->status >= 200 && rp->status < 300)
            slot_abort(s, OSSC_E_PROTOCOL, 0, "asked for bytes %llu-%llu, got HTTP %d without a "
                       "range", (unsigned long long)start, (unsigned long long)end, rp->status);
        return false; /* an error reply: its body is buffered for the message */
    }
    if (!rp->has_range || rp->range_start != start || rp->range_end != end) {
        slot_abort(s, OSSC_E_PROTOCOL, 0, "asked for bytes %llu-%llu, got Content-Range "
                   "%llu-%llu", (unsigned long long)start, (unsigned long long)end,
                   (unsigned long long)rp->range_start, (unsigned long long)rp->range_end);
        return false;
    }
    if (rp->range_total != is->it.object_size) {
        slot_abort(s, OSSC_E_INTEGRITY, 0, "object is %llu bytes now, %llu when listed: it "
                   "changed during the fetch", (unsigned long long)rp->range_total,
                   (unsigned long long)is->it.object_size);
        return false;
    }
    if (rp->has_content_length && rp->content_length != end - start + 1) {
        slot_abort(s, OSSC_E_PROTOCOL, 0, "Content-Length %llu does not match the range",
                   (unsigned long long)rp->content_length);
        return false;
    }
    if (c->done == 0)
        c->crc_valid = rp->has_crc64;
    else if (!rp->has_crc64)
        c->crc_valid = false;
    bool same_object = true;
    if (rp->has_crc64) {
        pthread_mutex_lock(&s->w->f->lock);
        same_object = !is->has_object_crc || is->object_crc == rp->crc64;
        is->object_crc = rp->crc64;
        is->has_object_crc = true;
        pthread_mutex_unlock(&s->w->f->lock);
    }
    if (!same_object)
        slot_abort(s, OSSC_E_INTEGRITY, 0, "the object's CRC-64 changed during the fetch: it "
                   "was overwritten");
    return same_object;
}

/* Whether byte pos of an item is in a reserved span of its mapping (written with memcpy). */
static bool span_reserved(ossc_fetch *f, item_state *is, uint64_t pos)
{
    return atomic_load_explicit(&is->map_state, memory_order_acquire) == MAP_OPEN &&
           atomic_load_explicit(&f->spans[is->first_span + pos / RESERVE_SPAN].state,
                                memory_order_acquire) == SPAN_RESERVED;
}

static size_t sink_write(char *data, size_t size, size_t n, void *slot_ptr)
{
    slot *s = slot_ptr;
    ossc_fetch *f = s->w->f;
    chunk *c = &f->chunks[s->chunk];
    item_state *is = &f->items[c->item];
    size_t len = size * n;
    if (!s->checked) {
        s->checked = true;
        s->accepting = check_reply(s, c, is);
        if (s->abort_code)
            return 0;
    }
    if (!s->accepting) {
        if (s->rp.body.len < 65536)
            sb_append(&s->rp.body, data, len);
        return len;
    }
    if (atomic_load(&f->cancelled))
        return 0;
    if (len > c->length - c->done) {
        slot_abort(s, OSSC_E_PROTOCOL, 0, "reply body is longer than the range it announced");
        return 0;
    }
    if (len == 0)
        return 0;
    uint64_t pos = c->offset + c->done - is->it.offset;
    /* len <= RECV_BUFFER_SIZE: the bytes lie in one span or two */
    if (span_reserved(f, is, pos) && span_reserved(f, is, pos + len - 1)) {
        memcpy(is->map.at + pos, data, len);
    } else if (is->it.fd >= 0) {
        size_t off = 0;
        while (off < len) {
            ssize_t w = pwrite(is->it.fd, data + off, len - off,
                               (off_t)(is->it.fd_offset + pos + off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                int e = w < 0 ? errno : ENOSPC;
                slot_abort(s, OSSC_E_IO, e, "writing the local copy: %s", strerror(e));
                return 0;
            }
            off += (size_t)w;
        }
    } else {
        memcpy((char *)is->it.mem + pos, data, len);
    }
    if (c->crc_valid)
        c->crc = ossc_crc64(c->crc, data, len);
    c->done += len;
    atomic_fetch_add(&f->bytes_done, len);
    return len;
}

/* Maps an item once, by whoever needs it first; false if it is written with pwrite. */
static bool item_mapped(ossc_fetch *f, item_state *is)
{
    int undecided = MAP_UNDECIDED;
    if (atomic_compare_exchange_strong(&is->map_state, &undecided, MAP_OPENING)) {
        int rc = sink_map_open(&is->map, is->it.fd, is->it.fd_offset, is->it.length);
        if (rc == 0)
            LOGD("%s: written through a shared mapping", is->it.key);
        else if (rc != ENOTSUP)
            LOGD("%s: written with pwrite (no mapping: %s)", is->it.key, strerror(rc));
        pthread_mutex_lock(&f->lock);
        atomic_store_explicit(&is->map_state, rc == 0 ? MAP_OPEN : MAP_NONE,
                              memory_order_release);
        pthread_cond_broadcast(&f->changed);
        pthread_mutex_unlock(&f->lock);
    } else if (undecided == MAP_OPENING) {
        pthread_mutex_lock(&f->lock);
        while (atomic_load_explicit(&is->map_state, memory_order_acquire) == MAP_OPENING)
            pthread_cond_wait(&f->changed, &f->lock);
        pthread_mutex_unlock(&f->lock);
    }
    return atomic_load_explicit(&is->map_state, memory_order_acquire) == MAP_OPEN;
}

/* Reserves span k of a mapped item, unless another thread took it. */
static void span_reserve(ossc_fetch *f, item_state *is, uint64_t k)
{
    int free_span = SPAN_FREE;
    span *sp = &f->spans[is->first_span + k];
    if (!atomic_compare_exchange_strong(&sp->state, &free_span, SPAN_TAKEN))
        return;
    uint64_t from = k * RESERVE_SPAN, length = is->it.length;
    uint64_t to = length - from > RESERVE_SPAN ? from + RESERVE_SPAN : length;
    int rc = sink_map_reserve(&is->map, from, to);
    if (rc)
        LOGD("%s: bytes %llu-%llu written with pwrite (not reserved: %s)", is->it.key,
             (unsigned long long)from, (unsigned long long)to - 1, strerror(rc));
    pthread_mutex_lock(&f->lock);
    atomic_store_explicit(&sp->state, rc ? SPAN_FAILED : SPAN_RESERVED, memory_order_release);
    pthread_cond_broadcast(&f->changed); /* transfers waiting for it (item_prepare) */
    pthread_mutex_unlock(&f->lock);
}

/* Before a transfer writes [from, to) of an item: the item mapped, and each span there
 * reserved, by this thread where nobody took it yet. A span being reserved is waited for
 * rather than written with pwrite, which would queue on the inode lock its reservation holds. */
static void item_prepare(ossc_fetch *f, item_state *is, uint64_t from, uint64_t to)
{
    if (!item_mapped(f, is))
        return;
    for (uint64_t k = from / RESERVE_SPAN; k * RESERVE_SPAN < to; k++) {
        span_reserve(f, is, k);
        atomic_int *state = &f->spans[is->first_span + k].state;
        if (atomic_load_explicit(state, memory_order_acquire) != SPAN_TAKEN)
            continue;
        pthread_mutex_lock(&f->lock);
        while (atomic_load_explicit(state, memory_order_acquire) == SPAN_TAKEN)
            pthread_cond_wait(&f->changed, &f->lock);
        pthread_mutex_unlock(&f->lock);
    }
}

/* Reserves the mapped items' spans in order, ahead of their transfers, up to
 * reserve_ahead_bytes past the bytes landed. */
static void *reserve_ahead_main(void *arg)
{
    ossc_fetch *f = arg;
    uint32_t j;
    while (!atomic_load(&f->cancelled) &&
           (j = atomic_fetch_add(&f->next_to_reserve, 1)) < f->n_spans) {
        item_state *is = &f->items[f->spans[j].item];
        uint64_t k = j - is->first_span;
        if (atomic_load(&f->spans[j].state) != SPAN_FREE)
            continue; /* a transfer took it first */
        pthread_mutex_lock(&f->lock);
        while (!atomic_load(&f->cancelled) && f->items_open > 0 &&
               is->fetch_offset + k * RESERVE_SPAN >
                   atomic_load(&f->bytes_done) + f->reserve_ahead_bytes) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += IDLE_POLL_MS * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&f->changed, &f->lock, &ts); /* a transfer ended, or not */
        }
        bool over = atomic_load(&f->cancelled) || f->items_open == 0;
        bool failed = is->failed; /* its pages would hold space for nothing */
        pthread_mutex_unlock(&f->lock);
        if (over)
            break;
        if (!failed && item_mapped(f, is))
            span_reserve(f, is, k);
    }
    return NULL;
}

static int start_transfer(worker *w, slot *s, uint32_t ci, ossc_error *err)
{
    ossc_fetch *f = w->f;
    ossc_client *cl = f->client;
    chunk *c = &f->chunks[ci];
    item_state *is = &f->items[c->item];
    item_prepare(f, is, c->offset + c->done - is->it.offset,
                 c->offset + c->length - is->it.offset);
    s->chunk = ci;
    s->checked = s->accepting = false;
    s->abort_code = s->abort_errno = 0;
    s->abort_msg[0] = s->curl_err[0] = '\0';
    reply_reset(&s->rp);
    request_free(&s->req);
    request_init(&s->req, "GET", is->it.key);
    snprintf(s->range, sizeof(s->range), "bytes=%llu-%llu",
             (unsigned long long)(c->offset + c->done),
             (unsigned long long)(c->offset + c->length - 1));
    request_add_header(&s->req, "Range", s->range);
    if (cl->url.scheme == SCHEME_OSS)
        request_add_header(&s->req, "x-oss-range-behavior", "standard");
    int rc = request_prepare(cl, &s->req, time(NULL), err);
    if (rc)
        return rc;
    CURL *e = s->easy;
    curl_easy_reset(e);
    http_setup_easy(cl, e);
    curl_easy_setopt(e, CURLOPT_URL, s->req.url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->req.header_list);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &s->rp);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_PRIVATE, s);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->curl_err);
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, RECV_BUFFER_SIZE);
    curl_multi_add_handle(w->multi, e);
    w->n_active++;
    atomic_fetch_add(&f->requests, 1);
    atomic_store(&f->current_item, (int_fast64_t)c->item);
    return 0;
}

/* A transfer ended: the chunk is done, goes back to the queue, or fails its item. */
static void finish_transfer(worker *w, slot *s, CURLcode res)
{
    ossc_fetch *f = w->f;
    ossc_client *cl = f->client;
    uint32_t ci = s->chunk;
    chunk *c = &f->chunks[ci];
    item_state *is = &f->items[c->item];
    curl_multi_remove_handle(w->multi, s->easy);
    w->n_active--;
    s->chunk = NO_CHUNK;

    ossc_error e;
    err_clear(&e);
    enum failure_class cls = FAIL_NONE;
    int code = 0;
    if (s->abort_code) {
        code = s->abort_code;
        /* A bad range may be a confused proxy and is retried; a local write error is not. */
        cls = code == OSSC_E_IO ? FAIL_PERMANENT : FAIL_TRANSIENT;
        err_set(&e, code, "%s (%s): %s", is->it.key, s->range, s->abort_msg);
        e.sys_errno = s->abort_errno;
    } else if (atomic_load(&f->cancelled)) {
        code = OSSC_E_CANCELLED;
        cls = FAIL_PERMANENT;
        err_set(&e, code, "%s: cancelled", is->it.key);
    } else if (res != CURLE_OK) {
        cls = http_classify_curl(res, &code);
        err_set(&e, code, "%s (%s): %s", is->it.key, s->range,
                *s->curl_err ? s->curl_err : curl_easy_strerror(res));
    } else if (s->rp.status != 206) {
        cls = http_classify_status(s->rp.status, &code);
        if (cls == FAIL_NONE) { /* 2xx that is not 206: check_reply said why */
            cls = FAIL_TRANSIENT;
            code = OSSC_E_PROTOCOL;
        }
        char what[1200];
        snprintf(what, sizeof(what), "%s (%s)", is->it.key, s->range);
        http_reply_error(&s->rp, what, code, &e);
    } else if (c->done != c->length) {
        cls = FAIL_TRANSIENT;
        code = OSSC_E_NETWORK;
        err_set(&e, code, "%s (%s): body ended after %llu of %llu bytes", is->it.key, s->range,
                (unsigned long long)c->done, (unsigned long long)c->length);
    }

    pthread_mutex_lock(&f->lock);
    f->active--;
    if (is->failed) {
        c->state = CH_DROPPED;
    } else if (cls == FAIL_NONE) {
        c->state = CH_DONE;
        /* Bytes the store vouches for with a CRC-64 are shown only once it verifies: a
         * reader must never see bytes that a refetch would replace. */
        c->held = c->crc_valid && cl->s.verify_before_read;
        if (f->on_chunk && !c->held)
            f->on_chunk(f->ctx, c->item, c->offset, c->length, 0);
        if (++is->chunks_done == is->n_chunks)
            item_complete(f, c->item);
    } else if (cls == FAIL_PERMANENT || c->attempts >= cl->s.retries) {
        if (cls != FAIL_PERMANENT) {
            size_t n = strlen(e.message);
            snprintf(e.message + n, sizeof(e.message) - n, " (gave up after %d attempts)",
                     c->attempts + 1);
        }
        c->state = CH_DROPPED;
        item_fail(f, c->item, &e);
    } else {
        c->attempts++;
        long delay = http_backoff_ms(c->attempts, s->rp.qos_delay_ms);
        c->not_before_ms = now_ms() + (uint64_t)delay;
        LOGW("%s; retry %d in %ld ms", e.message, c->attempts, delay);
        atomic_fetch_add(&f->retries, 1);
        queue_push(f, ci, true);
    }
    pthread_cond_broadcast(&f->changed);
    pthread_mutex_unlock(&f->lock);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    ossc_fetch *f = w->f;
    int n_slots = f->client->s.workers;
    pthread_setname_np(pthread_self(), "ossc-fetch"); /* for top -H, and tests count them */
    for (;;) {
        /* Fill idle slots from the queue. */
        long wait_ms = IDLE_POLL_MS;
        bool done = false;
        for (int i = 0; i < n_slots; i++) {
            slot *s = &w->slots[i];
            if (s->chunk != NO_CHUNK)
                continue;
            pthread_mutex_lock(&f->lock);
            uint32_t ci = atomic_load(&f->cancelled) ? NO_CHUNK
                                                     : queue_pop_due(f, now_ms(), &wait_ms);
            done = ci == NO_CHUNK && f->head == NO_CHUNK && f->active == 0 && w->n_active == 0;
            if (done || atomic_load(&f->cancelled))
                pthread_cond_broadcast(&f->changed);
            pthread_mutex_unlock(&f->lock);
            if (ci == NO_CHUNK)
                break;
            ossc_error e;
            err_clear(&e);
            if (start_transfer(w, s, ci, &e) != 0) {
                s->chunk = NO_CHUNK;
                pthread_mutex_lock(&f->lock);
                f->active--;
                f->chunks[ci].state = CH_DROPPED;
                item_fail(f, f->chunks[ci].item, &e);
                pthread_mutex_unlock(&f->lock);
            }
        }
        if (w->n_active == 0) {
            if (done || atomic_load(&f->cancelled))
                break;
            /* Nothing of ours in flight: wait for work (a retry coming due, a requeue). */
            pthread_mutex_lock(&f->lock);
            if (f->head == NO_CHUNK && f->active == 0) {
                pthread_mutex_unlock(&f->lock);
                break;
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            long ms = wait_ms < 1 ? 1 : wait_ms;
            ts.tv_nsec += (ms % 1000) * 1000000L;
            ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&f->changed, &f->lock, &ts);
            pthread_mutex_unlock(&f->lock);
            continue;
        }
        int running;
        curl_multi_perform(w->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(w->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            slot *s;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            finish_transfer(w, s, msg->data.result);
        }
        if (w->n_active > 0)
            curl_multi_poll(w->multi, NULL, 0, (int)(wait_ms < 1 ? 1 : wait_ms), NULL);
        if (atomic_load(&f->cancelled)) {
            for (int i = 0; i < n_slots; i++)
                if (w->slots[i].chunk != NO_CHUNK)
                    finish_transfer(w, &w->slots[i], CURLE_ABORTED_BY_CALLBACK);
        }
    }
    return NULL;
}

/* ---- the public API ---- */

static void fetch_destroy(ossc_fetch *f)
{
    for (int i = 0; f->workers && i < f->n_workers; i++) {
        worker *w = &f->workers[i];
        for (int k = 0; w->slots && k < f->client->s.workers; k++) {
            request_free(&w->slots[k].req);
            reply_free(&w->slots[k].rp);
            if (w->slots[k].easy) {
                if (w->multi)
                    curl_multi_remove_handle(w->multi, w->slots[k].easy);
                curl_easy_cleanup(w->slots[k].easy);
            }
        }
        free(w->slots);
        if (w->multi) /* its connections stay open for the client's next fetch */
            multi_pool_give(f->client, w->multi);
    }
    for (size_t i = 0; f->items && i < f->n_items; i++) {
        sink_map_close(&f->items[i].map);
        free((char *)f->items[i].it.key);
    }
    free(f->workers);
    free(f->spans);
    free(f->items);
    free(f->chunks);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->changed);
    free(f);
}

static int validate_item(const ossc_fetch_item *it, ossc_error *err)
{
    if (!it->key || !*it->key) {
        err_set(err, OSSC_E_CONFIG, "fetch item without a key");
        return OSSC_E_CONFIG;
    }
    if (it->offset > it->object_size || it->length > it->object_size - it->offset) {
        err_set(err, OSSC_E_CONFIG, "%s: range %llu+%llu lies outside the object (%llu bytes)",
                it->key, (unsigned long long)it->offset, (unsigned long long)it->length,
                (unsigned long long)it->object_size);
        return OSSC_E_CONFIG;
    }
    if (it->fd < 0 && !it->mem && it->length) {
        err_set(err, OSSC_E_CONFIG, "%s: no sink (neither fd nor memory)", it->key);
        return OSSC_E_CONFIG;
    }
    return 0;
}

uint64_t fetch_chunk_size(const ossc_client *cl, uint64_t bytes)
{
    if (!(cl->s.derived & DERIVED_CHUNK_SIZE))
        return cl->s.chunk_size;
    tuning t;
    tuning_probe(&t);
    return tuning_chunk_size(&t, bytes, cl->s.vcpus * cl->s.workers);
}

/* Whether an item may be written through a mapping (it is, if its fd is a tmpfs file that
 * suits: sink_map_open). */
static bool written_through_mapping(const ossc_fetch *f, const ossc_fetch_item *it)
{
    return f->n_workers >= MAP_MIN_THREADS && it->fd >= 0 && it->length;
}

OSSC_API ossc_fetch *ossc_fetch_start(ossc_client *cl, const ossc_fetch_item *items,
                                      size_t n_items, ossc_chunk_cb on_chunk, void *ctx,
                                      ossc_error *err)
{
    err_clear(err);
    uint64_t bytes = 0;
    for (size_t i = 0; i < n_items; i++) {
        if (validate_item(&items[i], err))
            return NULL;
        bytes += items[i].length;
    }
    uint64_t chunk_size = fetch_chunk_size(cl, bytes);
    uint64_t n_chunks = 0;
    for (size_t i = 0; i < n_items; i++)
        n_chunks += (items[i].length + chunk_size - 1) / chunk_size;
    if (n_chunks >= NO_CHUNK) {
        err_set(err, OSSC_E_CONFIG, "too many chunks (%llu): raise chunkSize",
                (unsigned long long)n_chunks);
        return NULL;
    }
    ossc_fetch *f = calloc(1, sizeof(*f));
    if (!f)
        goto oom;
    pthread_mutex_init(&f->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&f->changed, &ca);
    pthread_condattr_destroy(&ca);
    f->client = cl;
    f->chunk_size = chunk_size;
    f->on_chunk = on_chunk;
    f->ctx = ctx;
    f->head = f->tail = NO_CHUNK;
    atomic_init(&f->current_item, -1);
    atomic_init(&f->next_to_reserve, 0);
    f->items = calloc(n_items ? n_items : 1, sizeof(item_state));
    f->chunks = calloc(n_chunks ? n_chunks : 1, sizeof(chunk));
    if (!f->items || !f->chunks)
        goto oom;
    f->n_items = n_items;
    f->n_chunks = (uint32_t)n_chunks;
    f->items_open = n_items;
    /* A thread per workers chunks, up to prefetch.vcpus: a small fetch starts few. */
    uint64_t threads = (n_chunks + (uint64_t)cl->s.workers - 1) / (uint64_t)cl->s.workers;
    f->n_workers = threads < (uint64_t)cl->s.vcpus ? (int)threads : cl->s.vcpus;
    if (f->n_workers < 1)
        f->n_workers = 1;

    uint32_t ci = 0;
    uint64_t n_spans = 0;
    for (size_t i = 0; i < n_items; i++)
        if (written_through_mapping(f, &items[i]))
            n_spans += (items[i].length + RESERVE_SPAN - 1) / RESERVE_SPAN;
    f->spans = calloc(n_spans ? n_spans : 1, sizeof(span));
    if (!f->spans || n_spans > UINT32_MAX)
        goto oom;
    for (size_t i = 0; i < n_items; i++) {
        item_state *is = &f->items[i];
        is->it = items[i];
        is->it.key = strdup(items[i].key);
        if (!is->it.key)
            goto oom;
        is->first_chunk = ci;
        bool mapped = written_through_mapping(f, &is->it);
        atomic_init(&is->map_state, mapped ? MAP_UNDECIDED : MAP_NONE);
        is->first_span = f->n_spans;
        for (uint64_t off = 0; mapped && off < is->it.length; off += RESERVE_SPAN) {
            atomic_init(&f->spans[f->n_spans].state, SPAN_FREE);
            f->spans[f->n_spans++].item = (uint32_t)i;
        }
        is->fetch_offset = f->bytes_total;
        f->bytes_total += is->it.length;
        for (uint64_t off = 0; off < is->it.length; off += chunk_size) {
            chunk *c = &f->chunks[ci];
            c->item = (uint32_t)i;
            c->offset = is->it.offset + off;
            c->length = is->it.length - off < chunk_size ? is->it.length - off : chunk_size;
            queue_push(f, ci++, false);
            is->n_chunks++;
        }
        if (is->n_chunks == 0) /* an empty range: nothing to fetch */
            item_finish(f, is);
    }

    f->workers = calloc((size_t)f->n_workers, sizeof(worker));
    if (!f->workers)
        goto oom;
    for (int i = 0; i < f->n_workers; i++) {
        worker *w = &f->workers[i];
        w->f = f;
        w->multi = multi_pool_take(cl);
        w->slots = calloc((size_t)cl->s.workers, sizeof(slot));
        if (!w->multi || !w->slots)
            goto oom;
        /* Keep every connection of this thread open between chunks. */
        curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, (long)cl->s.workers);
        for (int k = 0; k < cl->s.workers; k++) {
            w->slots[k].w = w;
            w->slots[k].chunk = NO_CHUNK;
            w->slots[k].easy = curl_easy_init();
            if (!w->slots[k].easy)
                goto oom;
        }
    }
    for (int i = 0; i < f->n_workers; i++) {
        if (pthread_create(&f->workers[i].thread, NULL, worker_main, &f->workers[i]) != 0) {
            atomic_store(&f->cancelled, true);
            for (int k = 0; k < i; k++)
                pthread_join(f->workers[k].thread, NULL);
            err_set(err, OSSC_E_NOMEM, "cannot start fetch threads");
            fetch_destroy(f);
            return NULL;
        }
    }
    /* Reserving ahead only where items are mapped (not into memory, not on few threads); none
     * starting just leaves it to the transfers. */
    int ahead = f->n_spans < RESERVE_AHEAD_THREADS ? (int)f->n_spans : RESERVE_AHEAD_THREADS;
    f->reserve_ahead_bytes = RESERVE_AHEAD_WINDOWS * (uint64_t)f->n_workers *
                             (uint64_t)cl->s.workers * f->chunk_size;
    while (f->n_reservers < ahead &&
           pthread_create(&f->reservers[f->n_reservers], NULL, reserve_ahead_main, f) == 0)
        f->n_reservers++;
    return f;
oom:
    err_set(err, OSSC_E_NOMEM, "out of memory preparing the fetch");
    if (f)
        fetch_destroy(f);
    return NULL;
}

OSSC_API int ossc_fetch_wait(ossc_fetch *f, int timeout_ms, ossc_error *err)
{
    err_clear(err);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&f->lock);
    /* All work: a failed item's other transfers run on (into its fd) until they end. */
    while (f->active > 0 || (f->items_open > 0 && !atomic_load(&f->cancelled))) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&f->changed, &f->lock);
        } else if (pthread_cond_timedwait(&f->changed, &f->lock, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&f->lock);
            return -1;
        }
    }
    int rc = 0;
    if (f->first_error.code) {
        rc = f->first_error.code;
        if (err)
            *err = f->first_error;
    } else if (f->items_open > 0) {
        rc = OSSC_E_CANCELLED;
        err_set(err, rc, "fetch cancelled");
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

OSSC_API void ossc_fetch_stats_get(ossc_fetch *f, ossc_fetch_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&f->lock);
    out->items_total = f->n_items;
    out->items_done = f->items_done;
    out->items_failed = f->items_failed;
    out->finished = f->items_open == 0 && f->active == 0;
    pthread_mutex_unlock(&f->lock);
    out->bytes_total = f->bytes_total;
    out->bytes_done = atomic_load(&f->bytes_done);
    out->requests = atomic_load(&f->requests);
    out->retries = atomic_load(&f->retries);
    out->current_item = atomic_load(&f->current_item);
}

bool fetch_item_idle(ossc_fetch *f, size_t item)
{
    if (item >= f->n_items)
        return true;
    pthread_mutex_lock(&f->lock);
    const item_state *is = &f->items[item];
    bool idle = is->finished || is->failed;
    for (uint32_t k = 0; idle && k < is->n_chunks; k++)
        idle = f->chunks[is->first_chunk + k].state != CH_ACTIVE;
    pthread_mutex_unlock(&f->lock);
    return idle;
}

OSSC_API int ossc_fetch_item_error(ossc_fetch *f, size_t item, ossc_error *err)
{
    err_clear(err);
    if (item >= f->n_items)
        return 0;
    pthread_mutex_lock(&f->lock);
    int rc = f->items[item].failed ? f->items[item].err.code : 0;
    if (rc && err)
        *err = f->items[item].err;
    pthread_mutex_unlock(&f->lock);
    return rc;
}

OSSC_API void ossc_fetch_prioritize(ossc_fetch *f, size_t item, uint64_t offset)
{
    if (item >= f->n_items)
        return;
    pthread_mutex_lock(&f->lock);
    item_state *is = &f->items[item];
    if (offset >= is->it.offset && offset < is->it.offset + is->it.length) {
        uint32_t ci = is->first_chunk + (uint32_t)((offset - is->it.offset) /
                                                   f->chunk_size);
        if (f->chunks[ci].state == CH_QUEUED) {
            queue_unlink(f, ci);
            queue_push(f, ci, true);
        } else if (f->chunks[ci].held) {
            /* Landed but held until the object verifies: what the reader waits for is the
             * rest of the object, so all of it goes to the front, in order. */
            for (uint32_t k = is->first_chunk + is->n_chunks; k-- > is->first_chunk;)
                if (f->chunks[k].state == CH_QUEUED) {
                    queue_unlink(f, k);
                    queue_push(f, k, true);
                }
        }
    }
    pthread_mutex_unlock(&f->lock);
}

OSSC_API int ossc_fetch_wait_range(ossc_fetch *f, size_t item, uint64_t offset,
                                   uint64_t length, int timeout_ms, ossc_error *err)
{
    err_clear(err);
    if (item >= f->n_items) {
        err_set(err, OSSC_E_CONFIG, "no item %zu in this fetch", item);
        return OSSC_E_CONFIG;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    if (timeout_ms >= 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    int rc = 0;
    pthread_mutex_lock(&f->lock);
    item_state *is = &f->items[item];
    uint64_t start = offset > is->it.offset ? offset : is->it.offset;
    uint64_t end = offset + length;
    if (end > is->it.offset + is->it.length)
        end = is->it.offset + is->it.length;
    uint32_t first = 0, last = 0;
    if (start < end) {
        first = is->first_chunk + (uint32_t)((start - is->it.offset) / f->chunk_size);
        last = is->first_chunk + (uint32_t)((end - 1 - is->it.offset) / f->chunk_size);
    }
    bool asked = false;
    for (uint32_t ci = first; start < end && ci <= last;) {
        chunk *c = &f->chunks[ci];
        if (c->state == CH_DONE && !c->held) {
            ci++;
            asked = false;
            continue;
        }
        if (is->failed) {
            rc = is->err.code;
            if (err)
                *err = is->err;
            break;
        }
        if (atomic_load(&f->cancelled)) {
            rc = OSSC_E_CANCELLED;
            err_set(err, rc, "%s: cancelled", is->it.key);
            break;
        }
        if (!asked) {
            if (c->state == CH_QUEUED) {
                queue_unlink(f, ci);
                queue_push(f, ci, true);
            } else if (c->held) {
                for (uint32_t k = is->first_chunk + is->n_chunks; k-- > is->first_chunk;)
                    if (f->chunks[k].state == CH_QUEUED) {
                        queue_unlink(f, k);
                        queue_push(f, k, true);
                    }
            }
            asked = true;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&f->changed, &f->lock);
        } else if (pthread_cond_timedwait(&f->changed, &f->lock, &deadline) == ETIMEDOUT) {
            rc = -1;
            break;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

OSSC_API void ossc_fetch_cancel(ossc_fetch *f)
{
    atomic_store(&f->cancelled, true);
    pthread_mutex_lock(&f->lock);
    pthread_cond_broadcast(&f->changed);
    pthread_mutex_unlock(&f->lock);
}

OSSC_API void ossc_fetch_free(ossc_fetch *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->lock);
    bool open = f->items_open > 0;
    pthread_mutex_unlock(&f->lock);
    if (open)
        ossc_fetch_cancel(f);
    for (int i = 0; i < f->n_workers; i++)
        pthread_join(f->workers[i].thread, NULL);
    for (int i = 0; i < f->n_reservers; i++)
        pthread_join(f->reservers[i], NULL);
    fetch_destroy(f);
}
