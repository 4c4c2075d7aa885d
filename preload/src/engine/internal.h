/* internal.h: types shared by the files of libossc; nothing here is public API. */
#ifndef OSSC_INTERNAL_H
#define OSSC_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "ossc.h"

#define OSSC_API __attribute__((visibility("default")))

/* ---- growable string (strbuf.c) ---- */
typedef struct strbuf {
    char *data;
    size_t len, cap;
    bool oom;  /* sticky: one check at the end instead of one per append */
} strbuf;

void sb_init(strbuf *sb);
void sb_free(strbuf *sb);
void sb_append(strbuf *sb, const char *s, size_t n);
void sb_puts(strbuf *sb, const char *s);
void sb_printf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *sb_steal(strbuf *sb); /* NULL if any append ran out of memory */

/* ---- errors (error.c) ---- */
void err_set(ossc_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void err_clear(ossc_error *err);

/* ---- logging (log.c) ---- */
enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3, LOG_OFF = 4 };
void log_configure(int level, const char *path);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOGE(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define LOGW(...) log_msg(LOG_WARN, __VA_ARGS__)
#define LOGI(...) log_msg(LOG_INFO, __VA_ARGS__)
#define LOGD(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* ---- settings (settings.c) ---- */
enum signature { SIG_OSS_V4, SIG_OSS_V1, SIG_AWS_V4 };
enum scheme { SCHEME_OSS, SCHEME_S3 };
/* How an upload's bytes are verified: auto is crc64 for oss://, crc32c for s3://. */
enum upload_checksum { UPLOAD_CHECKSUM_AUTO, UPLOAD_CHECKSUM_MD5, UPLOAD_CHECKSUM_CRC32C,
                       UPLOAD_CHECKSUM_CRC64, UPLOAD_CHECKSUM_OFF };

/* Settings left "auto", their values derived from this machine (tuning.c): settings_to_json
 * keeps "auto" for them, so a config file or the owner's options never pin one machine's
 * numbers; chunkSize's makes each fetch size its own chunks. */
enum derived_setting {
    DERIVED_VCPUS = 1u << 0,
    DERIVED_WORKERS = 1u << 1,
    DERIVED_CHUNK_SIZE = 1u << 2,
};

typedef struct settings {
    char endpoint[512];
    char region[64];
    int signature;      /* enum signature */
    int path_style;     /* 1: path-style addressing, 0: virtual-hosted */
    char credentials_file[1024];
    int vcpus;          /* fetch threads */
    int workers;        /* transfers in flight per thread */
    uint64_t chunk_size;
    unsigned derived;   /* enum derived_setting: which of the three were left "auto" */
    int retries;        /* attempts after the first */
    int connect_timeout_sec;
    int stall_timeout_sec;
    int log_level;
    char log_path[1024];
    char audit_path[1024];
    int expire_time_sec;
    uint64_t small_file_size;   /* objects below it are fetched whole into MODEL_DIR */
    int read_timeout_sec;
    int allow_non_empty;        /* materialize into a non-empty MODEL_DIR we did not create */
    int verify_before_read;     /* readers see an object with a CRC-64 only once it verified */
    int pin_gpu;                /* the shim registers shared mappings with CUDA (pin.c) */
    char cache_dir[900];        /* data files go to <cache_dir>/ossc-<hash>; "" for /dev/shm */
    int fetch_policy;           /* enum ossc_fetch_policy (session_layout.h) */
    char cache_limit[32];       /* "" none, a size, or a percentage of the cache filesystem */
    char shared_group[64];      /* a group (name or gid) whose members may attach read-only;
                                 * "" keeps sessions private to this uid */
    uint64_t upload_part_size;  /* bytes per UploadPart; smaller objects go in one PUT */
    int upload_concurrency;     /* parts in flight per upload */
    int upload_checksum;        /* enum upload_checksum */
    char config_path[1024]; /* the file that was read, "" if none */
} settings;

/* ---- defaults derived from the machine (tuning.c) ---- */
typedef struct tuning {
    int cores;            /* CPUs this process may run on */
    uint64_t memory;      /* physical memory, bytes */
} tuning;

void tuning_probe(tuning *t);
int tuning_threads(const tuning *t);
int tuning_transfers(int threads);
uint64_t tuning_chunk_size(const tuning *t, uint64_t total_bytes, int in_flight);

/* envp: "NAME=value" items, NULL-terminated; NULL reads the process environment. */
int settings_resolve(settings *s, int scheme, const char *const *overrides, size_t n,
                     const char *const *envp, ossc_error *err);
/* The settings in config-file form; keep_auto: "auto" for a derived setting (as it was
 * given), else the number in force. */
char *settings_to_json(const settings *s, bool keep_auto);
/* cacheLimit: "" (none: both 0), a size in *bytes, or a percentage (1-100) in *percent. */
bool settings_cache_limit(const char *text, uint64_t *bytes, int *percent);

/* ---- the fetch (fetch.c) ---- */
/* The chunk size a fetch of this many bytes uses: chunkSize, or derived when it is "auto". */
uint64_t fetch_chunk_size(const ossc_client *cl, uint64_t bytes);
/* Whether no transfer of item runs or will run again (it finished or failed, and its
 * failure's other transfers ended): until then its fd must stay open. */
bool fetch_item_idle(ossc_fetch *f, size_t item);

/* ---- writing through a shared mapping of a tmpfs file (sink_map.c) ---- */
typedef struct sink_map {
    void *addr;    /* the mapping, page-aligned; NULL when not mapped */
    size_t len;
    char *at;      /* the first byte of the range asked for */
    int fd;
    uint64_t offset; /* of that byte in the file */
    atomic_bool huge; /* huge pages are still tried (none failed or was slow yet); spans of one
                       * item are reserved by several threads at once */
} sink_map;

/* Maps [offset, offset+length) of fd, if fd is a tmpfs file open for reading and writing, that
 * long; 0, or why not (an errno, ENOTSUP for another kind of file; the caller then writes with
 * pwrite). Nothing may be written there before sink_map_reserve has reserved it. */
int sink_map_open(sink_map *m, int fd, uint64_t offset, uint64_t length);
/* Reserves the pages of [from, to) of the range (offsets from its start), in huge pages where
 * the kernel gives them: 0, or an errno (ENOSPC), after which that span must be written with
 * pwrite. */
int sink_map_reserve(sink_map *m, uint64_t from, uint64_t to);
void sink_map_close(sink_map *m);

/* ---- URLs and encoding (url.c) ---- */
typedef struct store_url {
    int scheme;        /* enum scheme */
    char bucket[64];
    char *prefix;      /* heap, "" for the bucket root */
} store_url;

typedef struct endpoint {
    char scheme[8];    /* "http" or "https" */
    char host[256];    /* host[:port] as it goes into Host */
} endpoint;

int url_parse_store(const char *url, store_url *out, ossc_error *err);
int url_parse_endpoint(const char *text, endpoint *out, ossc_error *err);
int url_derive_oss_region(const char *host, char *out, size_t cap);
/* RFC 3986 percent-encoding of everything but A-Z a-z 0-9 - _ . ~ (and '/' if keep_slash). */
void url_encode(strbuf *sb, const char *s, bool keep_slash);
/* Percent-decoding; returns false on a malformed escape. */
bool url_decode(const char *s, strbuf *out);

/* ---- credentials (credentials.c) ---- */
typedef struct credentials {
    char access_key_id[256];
    char access_key_secret[256];
    char security_token[4096];
} credentials;

typedef struct cred_provider {
    pthread_mutex_t lock;
    credentials current;
    char file[1024];     /* "" when they came from the environment */
    time_t expiration;   /* 0: never */
    time_t file_mtime;
    time_t last_check;
} cred_provider;

int creds_init(cred_provider *p, int scheme, const char *file, ossc_error *err);
/* A snapshot valid for signing now; re-reads the file before it expires. */
int creds_get(cred_provider *p, credentials *out, ossc_error *err);
/* Replaces the credentials with the caller's; the file (if any) is no longer read. */
int creds_set(cred_provider *p, const char *id, const char *secret, const char *token,
              ossc_error *err);
void creds_destroy(cred_provider *p);

/* ---- requests and signing (request.c, sign_*.c) ---- */
#define REQ_MAX_QUERY 8
#define REQ_MAX_HEADERS 16

typedef struct kv {
    const char *name;
    const char *value; /* NULL: a query flag without '=' */
} kv;

typedef struct request {
    const char *method;
    const char *key;          /* NULL for a bucket-level request */
    kv query[REQ_MAX_QUERY];  /* raw, unencoded */
    size_t n_query;
    kv headers[REQ_MAX_HEADERS];
    size_t n_headers;
    /* http_send gives up (OSSC_E_CANCELLED) once this turns true: mid-transfer, between
     * attempts, in a backoff; NULL: never */
    const _Atomic bool *cancel;
    /* filled by request_prepare */
    char *url;
    struct curl_slist *header_list;
    char *owned[2 * REQ_MAX_HEADERS]; /* strings copied in by request_set_header */
    size_t n_owned;
} request;

void request_init(request *r, const char *method, const char *key);
void request_add_query(request *r, const char *name, const char *value);
void request_add_header(request *r, const char *name, const char *value);
/* Like request_add_header, but copies name and value (for values built while signing). */
void request_set_header(request *r, const char *name, const char *value);
/* The value of a header (case-insensitive name), NULL if absent. */
const char *request_header(const request *r, const char *name);
/* Builds the URL and signs with the client's current credentials at unix_time. */
int request_prepare(ossc_client *c, request *r, time_t unix_time, ossc_error *err);
void request_free(request *r);

/* A signer adds its date/token/hash headers through add, then returns Authorization. */
typedef struct sign_input {
    const ossc_client *client;
    const credentials *creds;
    const request *req;       /* with every header it will carry but the signer's own */
    const char *host;
    const char *canonical_uri; /* the encoded path as sent */
    time_t unix_time;
} sign_input;

int sign_oss_v1(const sign_input *in, request *r, strbuf *auth);
int sign_oss_v4(const sign_input *in, request *r, strbuf *auth);
int sign_aws_v4(const sign_input *in, request *r, strbuf *auth);

/* crypto helpers (sign_common.c) */
void hmac_sha1(const void *key, size_t klen, const void *msg, size_t mlen, unsigned char out[20]);
void hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                 unsigned char out[32]);
void sha256_hex(const void *msg, size_t len, char out[65]);
void to_hex(const unsigned char *in, size_t n, char *out);
void base64(const unsigned char *in, size_t n, strbuf *out);
int kv_compare_name(const void *a, const void *b);
void canonical_query(const request *r, bool aws, strbuf *out);

/* ---- XML replies (xml.c) ---- */
typedef struct list_page {
    ossc_object *objects;   /* keys are malloc'd, decoded */
    size_t count, cap;
    bool truncated;
    char *next_token;
    bool url_encoded;
} list_page;

/* Keys are decoded when the page says EncodingType url; the token is left as sent, because
 * OSS encodes it and S3 does not. */
int xml_parse_list_page(const char *xml, size_t len, list_page *page, ossc_error *err);
void list_page_free(list_page *page);
/* Replaces a url-encoded malloc'd string by its decoded form. */
bool decode_in_place(char **s);
/* Fills err->server_code and a message from an S3/OSS <Error> body, if it is one. */
void xml_parse_error(const char *xml, size_t len, char *code, size_t code_cap, char *msg,
                     size_t msg_cap);

/* ---- CRC-32C (crc32c.c) ---- */
/* CRC-32C as S3's x-amz-checksum-crc32c (its value: the 4 bytes big-endian, base64); crc 0
 * starts a new one. */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

/* ---- multipart upload XML (upload_xml.c) ---- */
/* The UploadId of an InitiateMultipartUploadResult, into out (cap bytes). */
int xml_parse_upload_id(const char *xml, size_t len, char *out, size_t cap, ossc_error *err);
/* The CompleteMultipartUpload body for parts 1..n_parts with their ETags as the store sent
 * them, and their CRC-32Cs (base64) when crc32cs is not NULL. */
void xml_complete_body(const char *const *etags, const char *const *crc32cs, size_t n_parts,
                       strbuf *out);

/* ---- HTTP (http.c) ---- */
/* How a failed attempt should be treated. */
enum failure_class { FAIL_NONE, FAIL_TRANSIENT, FAIL_THROTTLED, FAIL_PERMANENT };

typedef struct reply {
    int status;
    uint64_t content_length;
    bool has_content_length;
    bool has_range;
    uint64_t range_start, range_end, range_total;
    bool has_crc64;
    uint64_t crc64;
    int qos_delay_ms;
    char request_id[80];
    char etag[72];
    char checksum_crc32c[16]; /* x-amz-checksum-crc32c, "" if none */
    strbuf body;           /* buffered body of a metadata request or an error reply */
} reply;

void reply_reset(reply *rp);
void reply_free(reply *rp);
/* The header callback shared by every transfer: parses what we check into a reply. */
size_t http_header_cb(char *buf, size_t size, size_t n, void *reply_ptr);
void http_setup_easy(ossc_client *c, void *easy);
/* Maps an HTTP status to a failure class and an ossc_status. */
enum failure_class http_classify_status(int status, int *code);
enum failure_class http_classify_curl(int curl_code, int *code);
/* The delay before retry number attempt (1-based): exponential, full jitter, capped;
 * never shorter than the store's x-oss-qos-delay-time. */
long http_backoff_ms(int attempt, int qos_delay_ms);
/* Fills err from a failed reply (status, server code and message, request id). */
void http_reply_error(const reply *rp, const char *what, int code, ossc_error *err);
/* One request with retries, its body buffered; 0 on 2xx. */
int http_perform(ossc_client *c, request *r, reply *rp, const char *what, ossc_error *err);
/* Like http_perform, sending body (PUT, POST; DELETE and others without one); every attempt
 * sends it from its start. A 400 BadDigest/InvalidDigest is retried like a reset. */
int http_send(ossc_client *c, request *r, const void *body, size_t body_len, reply *rp,
              const char *what, ossc_error *err);

/* ---- a client's idle curl multi handles, connections open (multi_pool.c) ---- */
#define MULTI_POOL_MAX 4
void *multi_pool_take(ossc_client *c); /* a pooled CURLM, or a new one; NULL if out of memory */
void multi_pool_give(ossc_client *c, void *multi); /* no easy handle may be left in it */
void multi_pool_free(ossc_client *c);

/* ---- the client (client.c) ---- */
struct ossc_client {
    settings s;
    store_url url;
    endpoint ep;
    cred_provider creds;
    char product[16];      /* V4 scope product, "oss" */
    /* Parts being sent by all of the client's uploads (upload.c): at most upload.concurrency,
     * so concurrent uploads (DCP's writer threads, ranks' files) share the slots. */
    pthread_mutex_t upload_lock;
    pthread_cond_t upload_slot_free;
    int uploads_sending;
    pthread_mutex_t pool_lock; /* guards pooled, n_pooled, pool_pid */
    void *pooled[MULTI_POOL_MAX];
    int n_pooled;
    pid_t pool_pid;        /* the process whose connections they are */
};

uint64_t now_ms(void);

#endif
