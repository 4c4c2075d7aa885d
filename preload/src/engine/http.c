/* http.c: what every transfer shares: curl options, reply-header parsing, failure classes,
 * backoff, and the synchronous request-with-retries used for listings, HEADs and writes. */
#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 5000
#define MAX_BUFFERED_BODY ((size_t)64 << 20)

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void reply_reset(reply *rp)
{
    strbuf body = rp->body;
    memset(rp, 0, sizeof(*rp));
    body.len = 0;
    rp->body = body;
}

void reply_free(reply *rp)
{
    sb_free(&rp->body);
    memset(rp, 0, sizeof(*rp));
}

static bool header_is(const char *line, size_t len, const char *name, const char **value)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return false;
    const char *v = line + n + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    *value = v;
    return true;
}

static void copy_value(char *dst, size_t cap, const char *v, const char *end)
{
    size_t n = (size_t)(end - v);
    while (n && isspace((unsigned char)v[n - 1]))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

size_t http_header_cb(char *buf, size_t size, size_t n, void *reply_ptr)
{
    reply *rp = reply_ptr;
    size_t len = size * n;
    const char *end = buf + len, *v;
    char tmp[128];
    if (len > 5 && strncmp(buf, "HTTP/", 5) == 0) {
        reply_reset(rp); /* a new status line: an interim 100 or a redirect came before */
        const char *sp = memchr(buf, ' ', len);
        rp->status = sp ? (int)strtol(sp + 1, NULL, 10) : 0;
    } else if (header_is(buf, len, "Content-Length", &v)) {
        copy_value(tmp, sizeof(tmp), v, end);
        rp->has_content_length = sscanf(tmp, "%" SCNu64, &rp->content_length) == 1;
    } else if (header_is(buf, len, "Content-Range", &v)) {
        copy_value(tmp, sizeof(tmp), v, end);
        rp->has_range = sscanf(tmp, "bytes %" SCNu64 "-%" SCNu64 "/%" SCNu64, &rp->range_start,
                               &rp->range_end, &rp->range_total) == 3;
    } else if (header_is(buf, len, "x-oss-hash-crc64ecma", &v)) {
        copy_value(tmp, sizeof(tmp), v, end);
        rp->has_crc64 = sscanf(tmp, "%" SCNu64, &rp->crc64) == 1;
    } else if (header_is(buf, len, "x-oss-qos-delay-time", &v)) {
        copy_value(tmp, sizeof(tmp), v, end);
        rp->qos_delay_ms = (int)strtol(tmp, NULL, 10);
    } else if (header_is(buf, len, "x-oss-request-id", &v) ||
               header_is(buf, len, "x-amz-request-id", &v)) {
        copy_value(rp->request_id, sizeof(rp->request_id), v, end);
    } else if (header_is(buf, len, "ETag", &v)) {
        copy_value(rp->etag, sizeof(rp->etag), v, end);
    } else if (header_is(buf, len, "x-amz-checksum-crc32c", &v)) {
        copy_value(rp->checksum_crc32c, sizeof(rp->checksum_crc32c), v, end);
    }
    return len;
}

void http_setup_easy(ossc_client *c, void *easy)
{
    CURL *e = easy;
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    /* Keys may hold "/../" or "/./": send them as signed, never normalized. */
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)c->s.connect_timeout_sec);
    /* A transfer slower than 1 KiB/s for stallTimeoutSec is stalled: drop it and retry. */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)c->s.stall_timeout_sec);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "ossc/" OSSC_VERSION);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_header_cb);
}

enum failure_class http_classify_status(int status, int *code)
{
    if (status >= 200 && status < 300) {
        *code = OSSC_OK;
        return FAIL_NONE;
    }
    switch (status) {
    case 429:
    case 503:
        *code = OSSC_E_SERVER;
        return FAIL_THROTTLED;
    case 408:
        *code = OSSC_E_NETWORK;
        return FAIL_TRANSIENT;
    case 401:
    case 403:
        *code = OSSC_E_AUTH;
        return FAIL_PERMANENT;
    case 404:
        *code = OSSC_E_NOT_FOUND;
        return FAIL_PERMANENT;
    case 400:
        *code = OSSC_E_CONFIG; /* a wrong region or a malformed header: ours to fix */
        return FAIL_PERMANENT;
    }
    if (status >= 500) {
        *code = OSSC_E_SERVER;
        return FAIL_TRANSIENT;
    }
    *code = OSSC_E_PROTOCOL;
    return FAIL_PERMANENT;
}

enum failure_class http_classify_curl(int curl_code, int *code)
{
    switch ((CURLcode)curl_code) {
    case CURLE_OK:
        *code = OSSC_OK;
        return FAIL_NONE;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_PEER_FAILED_VERIFICATION:
        /* A wrong endpoint, not a flaky one: say so at once. */
        *code = curl_code == CURLE_COULDNT_RESOLVE_HOST ? OSSC_E_NETWORK : OSSC_E_CONFIG;
        return FAIL_PERMANENT;
    case CURLE_OUT_OF_MEMORY:
        *code = OSSC_E_NOMEM;
        return FAIL_PERMANENT;
    default:
        /* resets, timeouts, stalls, short bodies, refused connections */
        *code = OSSC_E_NETWORK;
        return FAIL_TRANSIENT;
    }
}

/* The jitter's random source: splitmix64 over a per-process seed from getrandom and a shared
 * counter, lock-free for every thread. A forked child sees another pid and draws a seed of its
 * own, so processes started together (or forked from one parent) never back off in step. */
static _Atomic uint64_t jitter_seed, jitter_count;
static _Atomic pid_t jitter_pid;

static uint64_t jitter_random(void)
{
    pid_t pid = getpid();
    if (atomic_load(&jitter_pid) != pid) {
        uint64_t seed;
        if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
            seed = ((uint64_t)pid << 32) ^ now_ms() ^ (uint64_t)time(NULL);
        atomic_store(&jitter_seed, seed);
        atomic_store(&jitter_pid, pid);
    }
    uint64_t z = atomic_load(&jitter_seed) +
                 (atomic_fetch_add(&jitter_count, 1) + 1) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

long http_backoff_ms(int attempt, int qos_delay_ms)
{
    long ceiling = BACKOFF_BASE_MS;
    for (int i = 1; i < attempt && ceiling < BACKOFF_CAP_MS; i++)
        ceiling *= 2;
    if (ceiling > BACKOFF_CAP_MS)
        ceiling = BACKOFF_CAP_MS;
    /* Equal jitter: at least half the ceiling, so retries never hammer; spread the rest. */
    long delay = ceiling / 2 + (long)(jitter_random() % (uint64_t)(ceiling / 2 + 1));
    return qos_delay_ms > delay ? qos_delay_ms : delay;
}

void http_reply_error(const reply *rp, const char *what, int code, ossc_error *err)
{
    char server_code[64], msg[256];
    xml_parse_error(rp->body.data, rp->body.len, server_code, sizeof(server_code), msg,
                    sizeof(msg));
    if (!*server_code && rp->status == 404)
        snprintf(server_code, sizeof(server_code), "NotFound");
    if (!*server_code && rp->status == 403)
        snprintf(server_code, sizeof(server_code), "AccessDenied");
    err_set(err, code, "%s: HTTP %d%s%s%s%s%s%s%s", what, rp->status, *server_code ? " " : "",
            server_code, *msg ? ": " : "", msg, *rp->request_id ? " (request id " : "",
            rp->request_id, *rp->request_id ? ")" : "");
    err->http_status = rp->status;
    snprintf(err->server_code, sizeof(err->server_code), "%s", server_code);
}

static size_t buffer_body(char *data, size_t size, size_t n, void *reply_ptr)
{
    reply *rp = reply_ptr;
    size_t len = size * n;
    if (rp->body.len + len > MAX_BUFFERED_BODY)
        return 0; /* aborts the transfer: no metadata reply is this large */
    sb_append(&rp->body, data, len);
    return rp->body.oom ? 0 : len;
}

/* A request body sent from memory: rewound for every attempt, so a retry re-sends it whole. */
typedef struct body_cursor {
    const unsigned char *data;
    size_t len, pos;
} body_cursor;

static size_t read_body(char *out, size_t size, size_t n, void *cursor_ptr)
{
    body_cursor *b = cursor_ptr;
    size_t want = size * n, left = b->len - b->pos;
    if (want > left)
        want = left;
    memcpy(out, b->data + b->pos, want);
    b->pos += want;
    return want;
}

static int seek_body(void *cursor_ptr, curl_off_t offset, int origin)
{
    body_cursor *b = cursor_ptr;
    if (origin != SEEK_SET || offset < 0 || (size_t)offset > b->len)
        return CURL_SEEKFUNC_FAIL;
    b->pos = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

static bool cancelled(const request *r)
{
    return r->cancel && atomic_load(r->cancel);
}

static int stop_if_cancelled(void *request_ptr, curl_off_t dltotal, curl_off_t dlnow,
                             curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return cancelled(request_ptr) ? 1 : 0;
}

/* Sleeps ms in short slices, returning early once r is cancelled. */
static void backoff_sleep(const request *r, long ms)
{
    for (long left = ms; left > 0 && !cancelled(r); left -= 50)
        usleep((useconds_t)(left < 50 ? left : 50) * 1000);
}

/* A 400 that a resent body may cure: the store saw other bytes than the digest promised. */
static bool digest_mismatch(const reply *rp)
{
    char code[64], msg[8];
    if (rp->status != 400)
        return false;
    xml_parse_error(rp->body.data, rp->body.len, code, sizeof(code), msg, sizeof(msg));
    return strcmp(code, "BadDigest") == 0 || strcmp(code, "InvalidDigest") == 0;
}

int http_perform(ossc_client *c, request *r, reply *rp, const char *what, ossc_error *err)
{
    return http_send(c, r, NULL, 0, rp, what, err);
}

int http_send(ossc_client *c, request *r, const void *body, size_t body_len, reply *rp,
              const char *what, ossc_error *err)
{
    body_cursor cursor = {body, body_len, 0};
    bool writes = strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0;
    CURL *e = curl_easy_init();
    if (!e) {
        err_set(err, OSSC_E_NOMEM, "%s: cannot create a curl handle", what);
        return OSSC_E_NOMEM;
    }
    char curl_err[CURL_ERROR_SIZE];
    int rc = 0;
    for (int attempt = 0;; attempt++) {
        if (cancelled(r)) {
            rc = OSSC_E_CANCELLED;
            err_set(err, rc, "%s: cancelled", what);
            break;
        }
        if ((rc = request_prepare(c, r, time(NULL), err)))
            break;
        reply_reset(rp);
        curl_easy_reset(e);
        http_setup_easy(c, e);
        curl_easy_setopt(e, CURLOPT_URL, r->url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->header_list);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, rp);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, buffer_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, rp);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, curl_err);
        if (strcmp(r->method, "HEAD") == 0)
            curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        if (!writes) {
            curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)(c->s.stall_timeout_sec * 4));
        } else if (strcmp(r->method, "PUT") == 0) {
            /* A body of any size streams at the link's pace: only a stall ends it. */
            cursor.pos = 0;
            curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(e, CURLOPT_READFUNCTION, read_body);
            curl_easy_setopt(e, CURLOPT_READDATA, &cursor);
            curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_body);
            curl_easy_setopt(e, CURLOPT_SEEKDATA, &cursor);
            curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_len);
        } else if (strcmp(r->method, "POST") == 0) {
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        } else {
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
        }
        if (r->cancel) {
            curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
            curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, stop_if_cancelled);
            curl_easy_setopt(e, CURLOPT_XFERINFODATA, r);
        }
        if (writes) {
            /* No 100-continue round trip: the store answers the whole request. Added after
             * signing, so no signer sees it. */
            struct curl_slist *next = curl_slist_append(r->header_list, "Expect:");
            if (next)
                r->header_list = next;
            curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->header_list);
        }
        curl_err[0] = '\0';
        CURLcode res = curl_easy_perform(e);
        enum failure_class cls;
        if (res != CURLE_OK) {
            cls = http_classify_curl(res, &rc);
            err_set(err, rc, "%s: %s at %s://%s (%d attempt%s)", what,
                    *curl_err ? curl_err : curl_easy_strerror(res), c->ep.scheme, c->ep.host,
                    attempt + 1, attempt ? "s" : "");
        } else {
            cls = http_classify_status(rp->status, &rc);
            if (cls == FAIL_NONE)
                break;
            if (digest_mismatch(rp)) {
                cls = FAIL_TRANSIENT;
                rc = OSSC_E_INTEGRITY;
            }
            http_reply_error(rp, what, rc, err);
        }
        if (cancelled(r)) {
            rc = OSSC_E_CANCELLED;
            err_set(err, rc, "%s: cancelled", what);
            break;
        }
        if (cls == FAIL_PERMANENT || attempt >= c->s.retries)
            break;
        long delay = http_backoff_ms(attempt + 1, rp->qos_delay_ms);
        LOGW("%s; retrying in %ld ms", err->message, delay);
        backoff_sleep(r, delay);
    }
    curl_easy_cleanup(e);
    return rc;
}
