/* ossc.h: the public API of libossc, the object-store fetch engine.
 *
 * A client is bound to one store URL (oss://bucket/prefix/ or s3://bucket/prefix/) and its
 * resolved settings. It lists, stats and signs synchronously; a fetch downloads a set of byte
 * ranges in parallel on background threads into files or memory, verified and retried.
 *
 * Every call that can fail returns 0 or an ossc_status and fills an ossc_error whose message is
 * one readable line without secrets.
 *
 * The block between the CFFI markers is parsed by the Python binding: keep it free of
 * preprocessor directives, and after changing it run `python3 -m ossc.binding
 * preload/include/ossc.h` (python/ossc/binding.py; tests/test_binding.py checks it).
 */
#ifndef OSSC_H
#define OSSC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* CFFI-BEGIN */
enum ossc_status {
    OSSC_OK = 0,
    OSSC_E_CONFIG = 1,      /* a bad setting, URL or endpoint */
    OSSC_E_CREDENTIALS = 2, /* credentials missing or unreadable */
    OSSC_E_AUTH = 3,        /* the store refused them (403) */
    OSSC_E_NOT_FOUND = 4,   /* no such bucket or key (404) */
    OSSC_E_NETWORK = 5,     /* unreachable, reset or stalled after every retry */
    OSSC_E_PROTOCOL = 6,    /* a reply that breaks the protocol (bad range, bad XML) */
    OSSC_E_INTEGRITY = 7,   /* size or CRC-64 mismatch after a refetch */
    OSSC_E_IO = 8,          /* writing the local sink failed (sys_errno says why) */
    OSSC_E_CANCELLED = 9,
    OSSC_E_NOMEM = 10,
    OSSC_E_SERVER = 11,     /* 5xx or throttling after every retry */
    OSSC_E_CONFLICT = 12,   /* MODEL_DIR is served from another store path already */
    OSSC_E_NO_SPACE = 13    /* the prefetch cannot fit in the cache's free space */
};

typedef struct ossc_error {
    int code;              /* enum ossc_status */
    int http_status;       /* the last HTTP status, 0 if none */
    int sys_errno;         /* the errno behind OSSC_E_IO, 0 otherwise */
    char server_code[64];  /* the store's <Code>, e.g. "SignatureDoesNotMatch" */
    char message[512];
} ossc_error;

typedef struct ossc_client ossc_client;
typedef struct ossc_fetch ossc_fetch;

typedef struct ossc_object {
    const char *key;       /* the full key, owned by the listing */
    uint64_t size;
    char etag[72];
} ossc_object;

typedef struct ossc_listing {
    ossc_object *objects;  /* sorted by key as the store returns them */
    size_t count;
} ossc_listing;

/* One byte range of an object to fetch, and where its bytes go: into fd at fd_offset
 * (pwrite) when fd >= 0, else into mem. A range covering the whole object is verified
 * against the store's CRC-64 when it sends one. */
typedef struct ossc_fetch_item {
    const char *key;
    uint64_t object_size;  /* as listed; a different size on the wire is an error */
    uint64_t offset;
    uint64_t length;
    int fd;
    uint64_t fd_offset;
    void *mem;
} ossc_fetch_item;

typedef struct ossc_fetch_stats {
    uint64_t bytes_total;
    uint64_t bytes_done;
    uint64_t items_total;
    uint64_t items_done;
    uint64_t items_failed;
    uint64_t requests;
    uint64_t retries;
    int64_t current_item;  /* an item being fetched now, -1 if none */
    int finished;
} ossc_fetch_stats;

/* Called on a fetch thread each time a chunk [offset, offset+length) of an item is in its
 * sink (status 0) or has failed for good (status = ossc_status). Must not block. */
typedef void (*ossc_chunk_cb)(void *ctx, size_t item, uint64_t offset, uint64_t length,
                              int status);

/* Settings resolve as defaults < config file < environment < overrides ("key=value"). */
ossc_client *ossc_client_new(const char *url, const char *const *overrides, size_t n_overrides,
                             ossc_error *err);
void ossc_client_free(ossc_client *client);
/* Replaces the client's credentials (security_token NULL or "" for none): requests signed from
 * now on, those of running fetches included, use them; a credentials file is no longer read.
 * For callers that hold a credentials provider (the Python connector's cred_provider). */
int ossc_client_set_credentials(ossc_client *client, const char *access_key_id,
                                const char *access_key_secret, const char *security_token,
                                ossc_error *err);
/* The resolved settings as a JSON object (no secrets), the numbers this client runs with
 * (prefetch.vcpus and prefetch.workers derived from this machine when left "auto"); the
 * caller frees with ossc_free. */
char *ossc_client_settings_json(const ossc_client *client);
/* The settings a client for url (NULL: an oss:// one) would use, resolved from overrides,
 * envp ("NAME=value" items, NULL-terminated; NULL: this process's environment) and the
 * config file, as a JSON object in config-file form: a setting left "auto" (prefetch.vcpus,
 * prefetch.workers, chunkSize) stays "auto", never this machine's number. Nothing is
 * contacted. The caller frees with ossc_free. */
char *ossc_settings_json(const char *url, const char *const *overrides, size_t n_overrides,
                         const char *const *envp, ossc_error *err);
/* Every setting of the table, as a JSON array of objects: key (config.json's; a dot is a
 * nested object), env (OSSC_ name), ossEnv and s3Env (other names read, if any), type
 * ("string", "int", "size", "enum"), default (as text), min and max (int, size), maxLength
 * (string), choices and numbered (enum), group and help (for the commands' options), switch
 * (an option without value that sets "yes"). The commands' options are generated from it;
 * values are checked only by the engine. The caller frees with ossc_free. */
char *ossc_settings_describe(void);
/* The config file read when neither an override nor OSSC_CONFIG names one. */
const char *ossc_default_config_path(void);
/* The key prefix the URL names ("" for a bucket root). */
const char *ossc_client_prefix(const ossc_client *client);

int ossc_list(ossc_client *client, const char *prefix, ossc_listing **out, ossc_error *err);
/* Like ossc_list, with threads (<= 0: min(16, prefetch.vcpus * prefetch.workers), at most 64)
 * listing key ranges concurrently with start-after: a range whose page is full while
 * threads idle is split further. The same objects as ossc_list, sorted by key. */
int ossc_list_fast(ossc_client *client, const char *prefix, int threads, ossc_listing **out,
                   ossc_error *err);
void ossc_listing_free(ossc_listing *listing);
int ossc_head(ossc_client *client, const char *key, uint64_t *size, uint64_t *crc64,
              int *has_crc64, ossc_error *err);

ossc_fetch *ossc_fetch_start(ossc_client *client, const ossc_fetch_item *items, size_t n_items,
                             ossc_chunk_cb on_chunk, void *ctx, ossc_error *err);
/* Waits up to timeout_ms (-1: forever). Returns 0 when every item succeeded, the first
 * failure's status once all work has ended, or -1 if still running at the timeout. */
int ossc_fetch_wait(ossc_fetch *fetch, int timeout_ms, ossc_error *err);
void ossc_fetch_stats_get(ossc_fetch *fetch, ossc_fetch_stats *out);
/* The error of one failed item; returns its status (0 if it did not fail). */
int ossc_fetch_item_error(ossc_fetch *fetch, size_t item, ossc_error *err);
/* Move the chunk holding offset of item to the front of the queue; if that chunk is in but
 * held for verification (verifyBeforeRead), the item's remaining chunks. */
void ossc_fetch_prioritize(ossc_fetch *fetch, size_t item, uint64_t offset);
/* Waits up to timeout_ms (-1: forever) until the bytes [offset, offset+length) of item (object
 * offsets) are in its sink and may be read (verified where verifyBeforeRead holds them),
 * moving the first missing chunk to the front. Returns 0, -1 at the timeout, or the item's
 * failure (err says why; OSSC_E_CANCELLED once the fetch is cancelled). */
int ossc_fetch_wait_range(ossc_fetch *fetch, size_t item, uint64_t offset, uint64_t length,
                          int timeout_ms, ossc_error *err);
void ossc_fetch_cancel(ossc_fetch *fetch);
/* Cancels if still running, joins the threads, frees. */
void ossc_fetch_free(ossc_fetch *fetch);

/* The request the client would send, signed at unix_time: the URL on the first line, then
 * one "Name: value" line per header. query holds raw "k=v" or "k" items, headers raw
 * "Name: value" items. For signature tests and debugging; the caller frees with ossc_free. */
char *ossc_sign_request(ossc_client *client, const char *method, const char *key,
                        const char *const *query, size_t n_query, const char *const *headers,
                        size_t n_headers, int64_t unix_time, ossc_error *err);

/* Writes. key is the object's full key (like ossc_head's). An object appears under its key
 * whole or not at all: PutObject, or a multipart upload completed only once every part went
 * through. upload.checksum says how bytes are verified: x-amz-checksum-crc32c (crc32c, s3://
 * by default) or Content-MD5 (md5) on every body, which the store checks, or OSS's CRC-64 per
 * part and per object checked against what was sent (crc64, oss:// by default); failures
 * retry as reads do (a part is sent again from its start). */
int ossc_put_object(ossc_client *client, const char *key, const void *data, size_t len,
                    ossc_error *err);
/* The file at path under key: one PutObject below upload.partSize, else a multipart upload of
 * upload.partSize parts (larger ones for a file of more than 10,000: the stores' limit),
 * upload.concurrency at once; aborted on failure. A stream of more than 10,000 parts fails
 * (OSSC_E_CONFIG: raise upload.partSize). */
int ossc_upload_file(ossc_client *client, const char *key, const char *path, ossc_error *err);
int ossc_delete_object(ossc_client *client, const char *key, ossc_error *err);
/* A server-side copy within the client's bucket (one request: objects up to the store's copy
 * limit, 1 GB on OSS and 5 GB on S3). */
int ossc_copy_object(ossc_client *client, const char *src_key, const char *dst_key,
                     ossc_error *err);

/* An upload stream: bytes written fill upload.partSize parts, sent on background threads,
 * at most upload.concurrency at once over all the client's uploads (memory per upload:
 * concurrency + 1 parts; a write waits for a free one). An
 * object that ends within its first part goes in one PutObject at finish. Nothing is visible
 * under key before ossc_upload_finish returns 0; a failed part fails the next write or the
 * finish, and the multipart upload is aborted. Not for concurrent use by several threads. */
typedef struct ossc_upload ossc_upload;
ossc_upload *ossc_upload_start(ossc_client *client, const char *key, ossc_error *err);
int ossc_upload_write(ossc_upload *upload, const void *data, size_t len, ossc_error *err);
/* Sends what is left and completes (or aborts on failure): 0 once the object is under key. */
int ossc_upload_finish(ossc_upload *upload, ossc_error *err);
/* Abandons the upload: nothing appears under key, the store keeps no parts. */
void ossc_upload_abort(ossc_upload *upload);
/* Aborts unless finished, frees. */
void ossc_upload_free(ossc_upload *upload);

/* A session makes model_dir look local to every process with the shim. Its owner (the
 * ossc-owner program; never the application) calls ossc_session_start: it lists url,
 * materializes model_dir (directories, small files fetched whole, size-correct placeholders
 * for large ones), publishes the session in /dev/shm and prefetches the large objects into
 * it on background threads. If a live owner serves model_dir already, the session attaches
 * to it and fetches nothing (OSSC_E_CONFLICT if it serves another url). */
typedef struct ossc_session ossc_session;
ossc_session *ossc_session_start(const char *url, const char *model_dir,
                                 const char *const *overrides, size_t n_overrides,
                                 ossc_error *err);
/* 1 if the session attached to a live owner's (and fetches nothing). */
int ossc_session_attached(const ossc_session *session);
/* Like ossc_fetch_wait, for the session's prefetch (0 at once if attached). */
int ossc_session_wait(ossc_session *session, int timeout_ms, ossc_error *err);
void ossc_session_stats(ossc_session *session, ossc_fetch_stats *out);
/* Where the session lives in /dev/shm. */
const char *ossc_session_path(const ossc_session *session);
/* The MODEL_DIR-relative name of the prefetch's item (ossc_fetch_stats.current_item); NULL
 * when there is none. */
const char *ossc_session_item_name(const ossc_session *session, size_t item);
/* Serves the session until no process has used it (held its users file) for
 * max(expireTimeSec, 2 s), or until ossc_session_request_end. */
void ossc_session_serve(ossc_session *session);
/* Makes ossc_session_serve return; async-signal-safe. */
void ossc_session_request_end(ossc_session *session);
/* Stops the prefetch; with remove, deletes the session from /dev/shm and what it created in
 * MODEL_DIR (open fds and mappings keep their pages). */
void ossc_session_stop(ossc_session *session, int remove);

/* This uid's sessions on the node (model_dir NULL), or the one serving model_dir, as a JSON
 * array of objects: path, state, modelDir, ossPath, ownerPid, ownerAlive, users, objects,
 * bytesTotal, bytesDone, currentFile, memoryBytes, diskBytes, dataDir, startedUnix, errors,
 * policy ("eager", "lazy"), bytesHeld (the data files present), cacheLimit (0: none),
 * releases (files released to keep under it);
 * for model_dir also files (file, size, data: its data file, ready: all of it is in).
 * The caller frees with ossc_free. */
char *ossc_sessions_json(const char *model_dir, ossc_error *err);
/* Removes the session directory at path if its owner is dead and (unless force) no process
 * uses it: 1 removed, 0 kept (in use), 2 kept (its owner lives), -1 not a session directory
 * of this uid. */
int ossc_session_reap(const char *path, int force);
/* The session directory name for model_dir (candidate 0), as the shim looks for it. */
char *ossc_session_dir(const char *model_dir);
/* Counts the caller as a user of the live session serving model_dir (this uid's, or, with
 * shared_group (a name or gid, "" for none), a member's of that group), as the shim does for
 * every process that reads it: returns an fd holding flock(LOCK_SH) on its users file (close
 * it to leave), or -1 if no live session serves model_dir. */
int ossc_session_use(const char *model_dir, const char *shared_group);

/* Where key goes in a directory that mirrors prefix (MODEL_DIR, `ossc get`'s target): *rel
 * points into key, past prefix; NULL for a directory marker ("" or ending in '/'). A key that
 * would land outside the directory (an absolute name, an empty, "." or ".." part) is
 * OSSC_E_PROTOCOL. The one check for the engine and the Python commands. */
int ossc_relative_name(const char *key, const char *prefix, const char **rel, ossc_error *err);

/* CRC-64/XZ as OSS computes it (x-oss-hash-crc64ecma); crc 0 starts a new one. */
uint64_t ossc_crc64(uint64_t crc, const void *data, size_t len);
uint64_t ossc_crc64_combine(uint64_t crc1, uint64_t crc2, uint64_t len2);

void ossc_free(void *p);
const char *ossc_status_name(int status);
/* The exit code of the ossc commands for a status: one table for C and Python. */
int ossc_exit_code(int status);
const char *ossc_version(void);
/* CFFI-END */

#ifdef __cplusplus
}
#endif
#endif
