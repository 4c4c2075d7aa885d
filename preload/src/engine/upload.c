/* upload.c: writes: PutObject, multipart upload with parallel parts, DeleteObject, CopyObject.
 *
 * An upload is a stream: the caller's bytes fill part-sized buffers; a full buffer is handed to
 * upload.concurrency sending threads (each its own curl handle, hashing its own parts, so MD5
 * scales with them) once more bytes follow it. An object that ends inside its first part goes
 * in one PutObject and never starts a multipart upload. Buffers are recycled and bounded
 * (concurrency + 1 of them), so a fast writer waits for the store instead of filling memory.
 *
 * Integrity (upload.checksum): crc32c (s3:// by default) sends x-amz-checksum-crc32c with every
 * body (SSE4.2: GB/s per core; the store refuses other bytes, BadDigest is retried, and the
 * parts' CRCs go into Complete); md5 sends Content-MD5 (refused likewise; an ETag that is a
 * plain MD5 is checked too);
 * crc64 (oss:// by default, as oss2 does) checks the x-oss-hash-crc64ecma OSS returns against
 * the CRC-64 of what was sent, per part and per object (the parts' combined) after Complete;
 * a mismatching part is sent again. md5 checks a CRC-64 too where the store sends one. A
 * failed part (after every retry) aborts the multipart upload: the store keeps no parts and
 * the key gets nothing. The object appears under its key whole, at PutObject or Complete, or
 * not at all. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define MAX_CONCURRENCY 64
#define MAX_PARTS 10000 /* S3's and OSS's limit */

typedef struct part {
    size_t number; /* 1-based */
    unsigned char *data;
    size_t len;
    struct part *next;
} part;

typedef struct part_result {
    char etag[72];
    char crc32c[16];  /* base64, as sent (crc32c mode) */
    bool has_crc64;   /* the store sent it (and it matched) */
    uint64_t crc64;
    uint64_t len;
} part_result;

enum upload_state { UP_OPEN, UP_FINISHED, UP_ABORTED };

struct ossc_upload {
    ossc_client *c;
    char *key;
    size_t part_size;
    int concurrency;
    unsigned char *buf; /* the part the caller fills, NULL until bytes come */
    size_t fill;
    char upload_id[1024];
    bool initiated;
    int state;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    part *head, *tail;          /* full parts waiting for a thread */
    unsigned char *spare[MAX_CONCURRENCY + 1];
    int n_spare, n_buffers;
    size_t n_parts;
    part_result *results;       /* by part number - 1 */
    size_t results_cap;
    pthread_t threads[MAX_CONCURRENCY];
    int n_threads;
    bool no_more;               /* finish: threads leave once the queue is empty */
    _Atomic bool cancelled;     /* a part failed or the upload is abandoned: parts in flight
                                 * stop mid-transfer */
    int rc;                     /* the first failure */
    ossc_error err;
};

static void describe(const ossc_client *c, const char *key, const char *verb, char *out,
                     size_t cap)
{
    snprintf(out, cap, "%s %s://%s/%s", verb, c->url.scheme == SCHEME_S3 ? "s3" : "oss",
             c->url.bucket, key);
}

/* ---- one verified body ---- */

typedef struct digest {
    char md5_b64[32];
    char md5_hex[33];
} digest;

static void digest_of(const void *data, size_t len, digest *d)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(data, len, md, &n, EVP_md5(), NULL);
    to_hex(md, 16, d->md5_hex);
    strbuf sb;
    sb_init(&sb);
    base64(md, 16, &sb);
    snprintf(d->md5_b64, sizeof(d->md5_b64), "%s", sb.data ? sb.data : "");
    sb_free(&sb);
}

/* The store's ETag when it is a plain MD5 (not a multipart or SSE-KMS one) must be ours. */
static bool etag_matches(const char *etag, const char *md5_hex)
{
    const char *e = etag;
    size_t n = strlen(e);
    if (n >= 2 && e[0] == '"' && e[n - 1] == '"') {
        e++;
        n -= 2;
    }
    if (n != 32 || strspn(e, "0123456789abcdefABCDEF") < 32)
        return true; /* not an MD5: nothing to compare */
    return strncasecmp(e, md5_hex, 32) == 0;
}

static int checksum_mode(const ossc_client *c)
{
    int mode = c->s.upload_checksum;
    if (c->url.scheme == SCHEME_OSS && (mode == UPLOAD_CHECKSUM_AUTO ||
                                        mode == UPLOAD_CHECKSUM_CRC32C))
        return UPLOAD_CHECKSUM_CRC64; /* OSS takes no x-amz-checksum-*; it returns CRC-64s */
    return mode == UPLOAD_CHECKSUM_AUTO ? UPLOAD_CHECKSUM_CRC32C : mode;
}

/* x-amz-checksum-crc32c's value: the CRC's 4 bytes big-endian, base64. */
static void crc32c_base64(const void *data, size_t len, char out[16])
{
    uint32_t crc = crc32c(0, data, len);
    unsigned char be[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
                           (unsigned char)(crc >> 8), (unsigned char)crc};
    strbuf sb;
    sb_init(&sb);
    base64(be, 4, &sb);
    snprintf(out, 16, "%s", sb.data ? sb.data : "");
    sb_free(&sb);
}

/* PUT of body to key with query (a part: partNumber and uploadId), verified as
 * upload.checksum says; an integrity mismatch is sent again (for a PutObject that overwrites
 * the wrong bytes it reported). */
static int put_verified(ossc_client *c, const char *key, const kv *query, size_t n_query,
                        const void *body, size_t len, const _Atomic bool *cancel,
                        const char *what, part_result *out, ossc_error *err)
{
    int mode = checksum_mode(c);
    digest d;
    char crc32c_b64[16] = "";
    if (mode == UPLOAD_CHECKSUM_MD5)
        digest_of(body, len, &d);
    else if (mode == UPLOAD_CHECKSUM_CRC32C)
        crc32c_base64(body, len, crc32c_b64);
    uint64_t crc = 0;
    bool have_crc = false;
    int rc = 0;
    for (int attempt = 0; attempt <= c->s.retries; attempt++) {
        request r;
        request_init(&r, "PUT", key);
        r.cancel = cancel;
        for (size_t i = 0; i < n_query; i++)
            request_add_query(&r, query[i].name, query[i].value);
        if (mode == UPLOAD_CHECKSUM_MD5)
            request_add_header(&r, "Content-MD5", d.md5_b64);
        else if (mode == UPLOAD_CHECKSUM_CRC32C)
            request_add_header(&r, "x-amz-checksum-crc32c", crc32c_b64);
        reply rp;
        memset(&rp, 0, sizeof(rp));
        rc = http_send(c, &r, body, len, &rp, what, err);
        request_free(&r);
        bool check_crc = rp.has_crc64 && mode != UPLOAD_CHECKSUM_OFF;
        if (rc == 0) {
            if (check_crc && !have_crc) {
                crc = ossc_crc64(0, body, len);
                have_crc = true;
            }
            if (mode == UPLOAD_CHECKSUM_MD5 && !etag_matches(rp.etag, d.md5_hex)) {
                rc = OSSC_E_INTEGRITY;
                err_set(err, rc, "%s: the store's ETag %s is not the MD5 of what was sent",
                        what, rp.etag);
            } else if (mode == UPLOAD_CHECKSUM_CRC32C && *rp.checksum_crc32c &&
                       strcmp(rp.checksum_crc32c, crc32c_b64) != 0) {
                rc = OSSC_E_INTEGRITY;
                err_set(err, rc, "%s: the store's CRC-32C %s is not that of what was sent (%s)",
                        what, rp.checksum_crc32c, crc32c_b64);
            } else if (check_crc && rp.crc64 != crc) {
                rc = OSSC_E_INTEGRITY;
                err_set(err, rc, "%s: the store's CRC-64 %llu is not that of what was sent "
                        "(%llu)", what, (unsigned long long)rp.crc64, (unsigned long long)crc);
            } else if (out) {
                snprintf(out->etag, sizeof(out->etag), "%s", rp.etag);
                memcpy(out->crc32c, crc32c_b64, sizeof(out->crc32c));
                out->has_crc64 = check_crc;
                out->crc64 = crc;
                out->len = len;
            }
        }
        reply_free(&rp);
        if (rc != OSSC_E_INTEGRITY)
            break;
        LOGW("%s; sending it again", err->message);
    }
    return rc;
}

OSSC_API int ossc_put_object(ossc_client *c, const char *key, const void *data, size_t len,
                             ossc_error *err)
{
    err_clear(err);
    char what[1200];
    describe(c, key, "writing", what, sizeof(what));
    return put_verified(c, key, NULL, 0, data ? data : "", len, NULL, what, NULL, err);
}

/* A request whose success reply may still be an <Error> (S3's Complete and Copy answer 200
 * first and fail in the body). */
static int send_checked(ossc_client *c, request *r, const char *body, size_t len, reply *rp,
                        const char *what, ossc_error *err)
{
    int rc = http_send(c, r, body, len, rp, what, err);
    if (rc == 0 && rp->body.len) {
        char code[64], msg[256];
        xml_parse_error(rp->body.data, rp->body.len, code, sizeof(code), msg, sizeof(msg));
        if (*code) {
            rc = strcmp(code, "InternalError") == 0 || strcmp(code, "SlowDown") == 0
                     ? OSSC_E_SERVER : OSSC_E_PROTOCOL;
            http_reply_error(rp, what, rc, err);
        }
    }
    return rc;
}

OSSC_API int ossc_delete_object(ossc_client *c, const char *key, ossc_error *err)
{
    err_clear(err);
    char what[1200];
    describe(c, key, "deleting", what, sizeof(what));
    request r;
    request_init(&r, "DELETE", key);
    reply rp;
    memset(&rp, 0, sizeof(rp));
    int rc = http_send(c, &r, NULL, 0, &rp, what, err);
    request_free(&r);
    reply_free(&rp);
    return rc;
}

OSSC_API int ossc_copy_object(ossc_client *c, const char *src_key, const char *dst_key,
                              ossc_error *err)
{
    err_clear(err);
    char what[2400];
    snprintf(what, sizeof(what), "copying %s://%s/%s to %s",
             c->url.scheme == SCHEME_S3 ? "s3" : "oss", c->url.bucket, src_key, dst_key);
    strbuf source;
    sb_init(&source);
    sb_printf(&source, "/%s/", c->url.bucket);
    url_encode(&source, src_key, true);
    if (source.oom) {
        sb_free(&source);
        err_set(err, OSSC_E_NOMEM, "out of memory");
        return OSSC_E_NOMEM;
    }
    request r;
    request_init(&r, "PUT", dst_key);
    request_add_header(&r, c->url.scheme == SCHEME_S3 ? "x-amz-copy-source" : "x-oss-copy-source",
                       source.data);
    reply rp;
    memset(&rp, 0, sizeof(rp));
    int rc = send_checked(c, &r, NULL, 0, &rp, what, err);
    request_free(&r);
    reply_free(&rp);
    sb_free(&source);
    return rc;
}

/* ---- multipart ---- */

static void fail_locked(ossc_upload *u, int rc, const ossc_error *e)
{
    if (!u->rc) {
        u->rc = rc;
        u->err = *e;
    }
    u->cancelled = true;
    pthread_cond_broadcast(&u->changed);
}

/* Waits for one of the client's upload.concurrency sending slots (false: cancelled first). */
static bool take_slot(ossc_upload *u)
{
    ossc_client *c = u->c;
    pthread_mutex_lock(&c->upload_lock);
    while (c->uploads_sending >= c->s.upload_concurrency && !atomic_load(&u->cancelled)) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L; /* a cancel does not signal this condition */
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->upload_slot_free, &c->upload_lock, &until);
    }
    bool got = !atomic_load(&u->cancelled);
    if (got)
        c->uploads_sending++;
    pthread_mutex_unlock(&c->upload_lock);
    return got;
}

static void give_slot(ossc_client *c)
{
    pthread_mutex_lock(&c->upload_lock);
    c->uploads_sending--;
    pthread_cond_signal(&c->upload_slot_free);
    pthread_mutex_unlock(&c->upload_lock);
}

static void *sender(void *arg)
{
    ossc_upload *u = arg;
    pthread_mutex_lock(&u->lock);
    for (;;) {
        while (!u->head && !u->no_more && !u->cancelled)
            pthread_cond_wait(&u->changed, &u->lock);
        if (u->cancelled || !u->head)
            break;
        part *p = u->head;
        u->head = p->next;
        if (!u->head)
            u->tail = NULL;
        pthread_mutex_unlock(&u->lock);

        char number[24], what[1300];
        snprintf(number, sizeof(number), "%zu", p->number);
        char verb[64];
        snprintf(verb, sizeof(verb), "uploading part %zu of", p->number);
        describe(u->c, u->key, verb, what, sizeof(what));
        kv query[2] = {{"partNumber", number}, {"uploadId", u->upload_id}};
        part_result res;
        ossc_error e;
        err_clear(&e);
        int rc = OSSC_E_CANCELLED;
        if (take_slot(u)) {
            rc = put_verified(u->c, u->key, query, 2, p->data, p->len, &u->cancelled, what,
                              &res, &e);
            give_slot(u->c);
        } else {
            err_set(&e, rc, "%s: cancelled", what);
        }

        pthread_mutex_lock(&u->lock);
        if (rc)
            fail_locked(u, rc, &e);
        else
            u->results[p->number - 1] = res;
        u->spare[u->n_spare++] = p->data;
        free(p);
        pthread_cond_broadcast(&u->changed);
    }
    pthread_mutex_unlock(&u->lock);
    return NULL;
}

static int initiate(ossc_upload *u, ossc_error *err)
{
    char what[1200];
    describe(u->c, u->key, "starting a multipart upload of", what, sizeof(what));
    request r;
    request_init(&r, "POST", u->key);
    request_add_query(&r, "uploads", NULL);
    request_add_header(&r, "Content-Type", "application/octet-stream");
    if (checksum_mode(u->c) == UPLOAD_CHECKSUM_CRC32C) /* S3 then takes the parts' CRCs */
        request_add_header(&r, "x-amz-checksum-algorithm", "CRC32C");
    reply rp;
    memset(&rp, 0, sizeof(rp));
    int rc = http_send(u->c, &r, NULL, 0, &rp, what, err);
    request_free(&r);
    if (rc == 0)
        rc = xml_parse_upload_id(rp.body.data, rp.body.len, u->upload_id,
                                 sizeof(u->upload_id), err);
    reply_free(&rp);
    if (rc)
        return rc;
    u->initiated = true;
    for (int i = 0; i < u->concurrency; i++) {
        if (pthread_create(&u->threads[i], NULL, sender, u) != 0)
            break;
        u->n_threads++;
    }
    if (!u->n_threads) {
        err_set(err, OSSC_E_NOMEM, "%s: cannot start a sending thread", what);
        return OSSC_E_NOMEM;
    }
    return 0;
}

/* Queues the caller's full buffer as the next part (starting the multipart upload first). */
static int hand_off(ossc_upload *u, ossc_error *err)
{
    if (u->n_parts >= MAX_PARTS) {
        err_set(err, OSSC_E_CONFIG, "writing %s: more than %d parts of %zu bytes; raise "
                "upload.partSize", u->key, MAX_PARTS, u->part_size);
        return OSSC_E_CONFIG;
    }
    if (!u->initiated) {
        int rc = initiate(u, err);
        if (rc)
            return rc;
    }
    part *p = calloc(1, sizeof(*p));
    pthread_mutex_lock(&u->lock);
    if (p && u->n_parts >= u->results_cap) {
        size_t cap = u->results_cap ? 2 * u->results_cap : 64;
        part_result *r = realloc(u->results, cap * sizeof(*r));
        if (r) {
            u->results = r;
            u->results_cap = cap;
        } else {
            free(p);
            p = NULL;
        }
    }
    if (!p) {
        pthread_mutex_unlock(&u->lock);
        err_set(err, OSSC_E_NOMEM, "out of memory");
        return OSSC_E_NOMEM;
    }
    p->number = ++u->n_parts;
    p->data = u->buf;
    p->len = u->fill;
    if (u->tail)
        u->tail->next = p;
    else
        u->head = p;
    u->tail = p;
    u->buf = NULL;
    u->fill = 0;
    pthread_cond_broadcast(&u->changed);
    pthread_mutex_unlock(&u->lock);
    return 0;
}

/* A buffer for the next part: a spare one, a new one while fewer than concurrency + 1 exist,
 * else the first that a sending thread gives back. */
static int take_buffer(ossc_upload *u, ossc_error *err)
{
    pthread_mutex_lock(&u->lock);
    while (!u->n_spare && u->n_buffers > u->concurrency && !u->rc)
        pthread_cond_wait(&u->changed, &u->lock);
    int rc = u->rc;
    if (rc)
        *err = u->err;
    else if (u->n_spare)
        u->buf = u->spare[--u->n_spare];
    else if ((u->buf = malloc(u->part_size)))
        u->n_buffers++;
    pthread_mutex_unlock(&u->lock);
    if (!rc && !u->buf) {
        rc = OSSC_E_NOMEM;
        err_set(err, rc, "out of memory for a %zu-byte upload part", u->part_size);
    }
    return rc;
}

OSSC_API ossc_upload *ossc_upload_start(ossc_client *c, const char *key, ossc_error *err)
{
    err_clear(err);
    ossc_upload *u = calloc(1, sizeof(*u));
    if (!u || !(u->key = strdup(key))) {
        free(u);
        err_set(err, OSSC_E_NOMEM, "out of memory");
        return NULL;
    }
    u->c = c;
    u->part_size = (size_t)c->s.upload_part_size;
    u->concurrency = c->s.upload_concurrency < MAX_CONCURRENCY ? c->s.upload_concurrency
                                                               : MAX_CONCURRENCY;
    pthread_mutex_init(&u->lock, NULL);
    pthread_cond_init(&u->changed, NULL);
    return u;
}

/* Copies len bytes from data, or reads them from fd when data is NULL (len: at most). Returns
 * the bytes taken through *taken (fd: 0 at its end). */
static int feed(ossc_upload *u, const void *data, int fd, size_t len, size_t *taken,
                ossc_error *err)
{
    *taken = 0;
    if (u->state != UP_OPEN) {
        err_set(err, OSSC_E_CONFIG, "writing %s: the upload is already %s", u->key,
                u->state == UP_FINISHED ? "finished" : "aborted");
        return OSSC_E_CONFIG;
    }
    while (*taken < len) {
        pthread_mutex_lock(&u->lock);
        int failed = u->rc;
        if (failed)
            *err = u->err;
        pthread_mutex_unlock(&u->lock);
        if (failed)
            return failed;
        int rc = 0;
        if (u->buf && u->fill == u->part_size)
            rc = hand_off(u, err);
        if (!rc && !u->buf)
            rc = take_buffer(u, err);
        if (rc)
            return rc;
        size_t room = u->part_size - u->fill, n = len - *taken < room ? len - *taken : room;
        if (data) {
            memcpy(u->buf + u->fill, (const unsigned char *)data + *taken, n);
        } else {
            ssize_t got = read(fd, u->buf + u->fill, n);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0) {
                err_set(err, OSSC_E_IO, "reading the file to upload to %s: %s", u->key,
                        strerror(errno));
                err->sys_errno = errno;
                return OSSC_E_IO;
            }
            if (got == 0)
                return 0;
            n = (size_t)got;
        }
        u->fill += n;
        *taken += n;
    }
    return 0;
}

OSSC_API int ossc_upload_write(ossc_upload *u, const void *data, size_t len, ossc_error *err)
{
    err_clear(err);
    size_t taken;
    return feed(u, data, -1, len, &taken, err);
}

static void stop_senders(ossc_upload *u, bool cancel)
{
    pthread_mutex_lock(&u->lock);
    u->no_more = true;
    if (cancel)
        u->cancelled = true;
    pthread_cond_broadcast(&u->changed);
    pthread_mutex_unlock(&u->lock);
    for (int i = 0; i < u->n_threads; i++)
        pthread_join(u->threads[i], NULL);
    u->n_threads = 0;
}

static int abort_multipart(ossc_upload *u, ossc_error *err)
{
    char what[1200];
    describe(u->c, u->key, "aborting the multipart upload of", what, sizeof(what));
    request r;
    request_init(&r, "DELETE", u->key);
    request_add_query(&r, "uploadId", u->upload_id);
    reply rp;
    memset(&rp, 0, sizeof(rp));
    int rc = http_send(u->c, &r, NULL, 0, &rp, what, err);
    request_free(&r);
    reply_free(&rp);
    if (rc == OSSC_E_NOT_FOUND)
        rc = 0; /* a retried abort whose first attempt went through */
    if (rc)
        LOGE("%s; the store keeps its parts until a lifecycle rule removes them",
             err->message);
    return rc;
}

OSSC_API void ossc_upload_abort(ossc_upload *u)
{
    if (!u || u->state != UP_OPEN)
        return;
    u->state = UP_ABORTED;
    stop_senders(u, true);
    if (u->initiated) {
        ossc_error e;
        err_clear(&e);
        abort_multipart(u, &e);
    }
}

static int complete(ossc_upload *u, ossc_error *err)
{
    char what[1200];
    describe(u->c, u->key, "completing the multipart upload of", what, sizeof(what));
    const char **etags = calloc(u->n_parts, sizeof(*etags));
    const char **crc32cs = calloc(u->n_parts, sizeof(*crc32cs));
    if (!etags || !crc32cs) {
        free(etags);
        free(crc32cs);
        err_set(err, OSSC_E_NOMEM, "out of memory");
        return OSSC_E_NOMEM;
    }
    uint64_t crc = 0;
    bool parts_crc = true; /* every part's CRC-64 is known: the object's can be checked */
    for (size_t i = 0; i < u->n_parts; i++) {
        etags[i] = u->results[i].etag;
        crc32cs[i] = u->results[i].crc32c;
        parts_crc = parts_crc && u->results[i].has_crc64;
        crc = i ? ossc_crc64_combine(crc, u->results[i].crc64, u->results[i].len)
                : u->results[i].crc64;
    }
    strbuf body;
    sb_init(&body);
    xml_complete_body(etags, checksum_mode(u->c) == UPLOAD_CHECKSUM_CRC32C ? crc32cs : NULL,
                      u->n_parts, &body);
    free(etags);
    free(crc32cs);
    if (body.oom) {
        sb_free(&body);
        err_set(err, OSSC_E_NOMEM, "out of memory");
        return OSSC_E_NOMEM;
    }
    request r;
    request_init(&r, "POST", u->key);
    request_add_query(&r, "uploadId", u->upload_id);
    request_add_header(&r, "Content-Type", "application/xml");
    reply rp;
    memset(&rp, 0, sizeof(rp));
    int rc = send_checked(u->c, &r, body.data, body.len, &rp, what, err);
    request_free(&r);
    sb_free(&body);
    if (rc == 0 && parts_crc && rp.has_crc64 && rp.crc64 != crc) {
        rc = OSSC_E_INTEGRITY;
        err_set(err, rc, "%s: the object's CRC-64 %llu is not that of its parts (%llu); "
                "deleting it", what, (unsigned long long)rp.crc64, (unsigned long long)crc);
        ossc_error e;
        ossc_delete_object(u->c, u->key, &e);
    }
    reply_free(&rp);
    return rc;
}

OSSC_API int ossc_upload_finish(ossc_upload *u, ossc_error *err)
{
    err_clear(err);
    if (u->state != UP_OPEN) {
        err_set(err, OSSC_E_CONFIG, "writing %s: the upload is already %s", u->key,
                u->state == UP_FINISHED ? "finished" : "aborted");
        return OSSC_E_CONFIG;
    }
    int rc;
    if (!u->initiated) {
        rc = ossc_put_object(u->c, u->key, u->buf, u->fill, err);
        if (rc)
            u->state = UP_ABORTED;
        else
            u->state = UP_FINISHED;
        return rc;
    }
    rc = u->fill ? hand_off(u, err) : 0;
    stop_senders(u, rc != 0);
    if (!rc && u->rc) {
        rc = u->rc;
        *err = u->err;
    }
    if (!rc)
        rc = complete(u, err);
    if (rc) {
        ossc_error e;
        err_clear(&e);
        if (u->initiated)
            abort_multipart(u, &e);
        u->state = UP_ABORTED;
    } else {
        u->state = UP_FINISHED;
    }
    return rc;
}

OSSC_API void ossc_upload_free(ossc_upload *u)
{
    if (!u)
        return;
    ossc_upload_abort(u);
    stop_senders(u, true);
    while (u->head) {
        part *p = u->head;
        u->head = p->next;
        free(p->data);
        free(p);
    }
    for (int i = 0; i < u->n_spare; i++)
        free(u->spare[i]);
    free(u->buf);
    free(u->results);
    free(u->key);
    pthread_cond_destroy(&u->changed);
    pthread_mutex_destroy(&u->lock);
    free(u);
}

OSSC_API int ossc_upload_file(ossc_client *c, const char *key, const char *path,
                              ossc_error *err)
{
    err_clear(err);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        err_set(err, OSSC_E_IO, "cannot open %s to upload: %s", path, strerror(e));
        err->sys_errno = e;
        return OSSC_E_IO;
    }
    ossc_upload *u = ossc_upload_start(c, key, err);
    int rc = u ? 0 : err->code;
    struct stat st;
    if (u && fstat(fd, &st) == 0) {
        /* A file of more than MAX_PARTS parts gets larger ones (whole MiB). */
        uint64_t need = ((uint64_t)st.st_size + MAX_PARTS - 1) / MAX_PARTS;
        need = (need + (1 << 20) - 1) & ~(uint64_t)((1 << 20) - 1);
        if (need > u->part_size)
            u->part_size = (size_t)need;
    }
    for (size_t taken = 1; !rc && taken;)
        rc = feed(u, NULL, fd, (size_t)1 << 62, &taken, err);
    close(fd);
    if (!rc)
        rc = ossc_upload_finish(u, err);
    ossc_upload_free(u);
    return rc;
}
