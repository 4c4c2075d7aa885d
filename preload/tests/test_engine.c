/* test_engine.c: unit tests of the engine's pure parts: CRC-64, encoding, endpoints, settings,
 * the listing and error parsers, backoff. The network parts are tested against a real store
 * from Python (tests/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stddef.h>

#include "control_image.h"
#include "internal.h"
#include "session_check.h"
#include "session_layout.h"

static int failures, checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            failures++;                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

static void test_crc64(void)
{
    CHECK(ossc_crc64(0, "123456789", 9) == 0x995DC9BBDF1939FAULL);
    CHECK(ossc_crc64(0, "", 0) == 0);
    /* Chained and combined CRCs equal the one-shot CRC, at every split point. */
    unsigned char buf[300];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)(i * 31 + 7);
    uint64_t whole = ossc_crc64(0, buf, sizeof(buf));
    for (size_t split = 0; split <= sizeof(buf); split += 13) {
        uint64_t a = ossc_crc64(0, buf, split);
        uint64_t b = ossc_crc64(0, buf + split, sizeof(buf) - split);
        CHECK(ossc_crc64(a, buf + split, sizeof(buf) - split) == whole);
        CHECK(ossc_crc64_combine(a, b, sizeof(buf) - split) == whole);
    }
}

static void test_crc32c(void)
{
    CHECK(crc32c(0, "123456789", 9) == 0xE3069283u); /* the catalogue's check value */
    CHECK(crc32c(0, "", 0) == 0);
    /* Chained equals one-shot at every split, odd alignments included (the SSE4.2 path takes
     * bytes up to an 8-byte boundary, then words). */
    unsigned char buf[301];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)(i * 37 + 11);
    uint32_t whole = crc32c(0, buf, sizeof(buf));
    for (size_t split = 0; split <= sizeof(buf); split += 7)
        CHECK(crc32c(crc32c(0, buf, split), buf + split, sizeof(buf) - split) == whole);
    for (size_t start = 1; start < 9; start++) {
        uint32_t head = crc32c(0, buf, start);
        CHECK(crc32c(head, buf + start, sizeof(buf) - start) == whole);
    }
}

static void test_encoding(void)
{
    strbuf sb;
    sb_init(&sb);
    url_encode(&sb, "a b+c~d/é%", true);
    CHECK(strcmp(sb.data, "a%20b%2Bc~d/%C3%A9%25") == 0);
    sb_free(&sb);
    url_encode(&sb, "a/b", false);
    CHECK(strcmp(sb.data, "a%2Fb") == 0);
    sb_free(&sb);
    CHECK(url_decode("a+b%2Bc%C3%A9", &sb) && strcmp(sb.data, "a b+cé") == 0);
    sb_free(&sb);
    CHECK(!url_decode("bad%2", &sb));
    sb_free(&sb);
}

static void test_urls(void)
{
    store_url u;
    ossc_error e;
    CHECK(url_parse_store("oss://my-bucket/models/llama/", &u, &e) == 0);
    CHECK(u.scheme == SCHEME_OSS && strcmp(u.bucket, "my-bucket") == 0 &&
          strcmp(u.prefix, "models/llama/") == 0);
    free(u.prefix);
    CHECK(url_parse_store("s3://bk1", &u, &e) == 0 && strcmp(u.prefix, "") == 0);
    free(u.prefix);
    CHECK(url_parse_store("http://x/y", &u, &e) == OSSC_E_CONFIG);
    CHECK(url_parse_store("oss://Bad_Bucket/x", &u, &e) == OSSC_E_CONFIG);
    CHECK(url_parse_store("oss://ab/x", &u, &e) == OSSC_E_CONFIG);

    endpoint ep;
    CHECK(url_parse_endpoint("oss-cn-beijing-internal.aliyuncs.com", &ep, &e) == 0);
    CHECK(strcmp(ep.scheme, "http") == 0);
    CHECK(url_parse_endpoint("https://127.0.0.1:9000/", &ep, &e) == 0);
    CHECK(strcmp(ep.scheme, "https") == 0 && strcmp(ep.host, "127.0.0.1:9000") == 0);
    CHECK(url_parse_endpoint("ftp://x", &ep, &e) == OSSC_E_CONFIG);
    CHECK(url_parse_endpoint("http://x/path", &ep, &e) == OSSC_E_CONFIG);
    CHECK(url_parse_endpoint("http://u@x", &ep, &e) == OSSC_E_CONFIG);

    char region[64];
    CHECK(url_derive_oss_region("oss-cn-beijing-internal.aliyuncs.com", region, 64) == 0 &&
          strcmp(region, "cn-beijing") == 0);
    CHECK(url_derive_oss_region("oss-ap-southeast-1.aliyuncs.com", region, 64) == 0 &&
          strcmp(region, "ap-southeast-1") == 0);
    CHECK(url_derive_oss_region("127.0.0.1:9000", region, 64) != 0);
}

static void test_settings(void)
{
    settings s;
    ossc_error e;
    unsetenv("OSSC_CHUNK_SIZE");
    setenv("OSSC_CONFIG", "/nonexistent/ossc-test.json", 1);
    CHECK(settings_resolve(&s, SCHEME_OSS, NULL, 0, NULL, &e) == OSSC_E_CONFIG);
    unsetenv("OSSC_CONFIG");

    char path[] = "/tmp/ossc-test-config-XXXXXX";
    int fd = mkstemp(path);
    const char *json = "{\"logLevel\": \"debug\", \"prefetch\": {\"vcpus\": 3, \"workers\": 5},"
                       " \"chunkSize\": \"4MiB\"}";
    CHECK(write(fd, json, strlen(json)) == (ssize_t)strlen(json));
    close(fd);
    setenv("OSSC_CONFIG", path, 1);
    setenv("OSSC_PREFETCH_WORKERS", "7", 1);
    const char *ov[] = {"prefetch.vcpus=4"};
    CHECK(settings_resolve(&s, SCHEME_OSS, ov, 1, NULL, &e) == 0);
    CHECK(s.vcpus == 4);                 /* option beats file */
    CHECK(s.workers == 7);               /* env beats file */
    CHECK(s.chunk_size == 4u << 20);     /* file beats default */
    CHECK(s.log_level == LOG_DEBUG);
    CHECK(s.expire_time_sec == 120);     /* default */
    unsetenv("OSSC_PREFETCH_WORKERS");

    const char *bad_key[] = {"prefetch.vcpu=4"};
    CHECK(settings_resolve(&s, SCHEME_OSS, bad_key, 1, NULL, &e) == OSSC_E_CONFIG);
    CHECK(strstr(e.message, "did you mean 'prefetch.vcpus'") != NULL);
    /* cacheLimit: a size or a percentage, checked when resolved */
    uint64_t bytes;
    int percent;
    CHECK(settings_cache_limit("", &bytes, &percent) && bytes == 0 && percent == 0);
    CHECK(settings_cache_limit("8GiB", &bytes, &percent) && bytes == 8ULL << 30 && !percent);
    CHECK(settings_cache_limit("50%", &bytes, &percent) && percent == 50 && !bytes);
    CHECK(!settings_cache_limit("0%", &bytes, &percent));
    CHECK(!settings_cache_limit("101%", &bytes, &percent));
    CHECK(!settings_cache_limit("lots", &bytes, &percent));
    CHECK(!settings_cache_limit("0", &bytes, &percent));
    const char *lazy[] = {"prefetch.policy=lazy", "cacheLimit=25%"};
    CHECK(settings_resolve(&s, SCHEME_OSS, lazy, 2, NULL, &e) == 0);
    CHECK(s.fetch_policy == OSSC_FETCH_LAZY && strcmp(s.cache_limit, "25%") == 0);
    const char *bad_limit[] = {"cacheLimit=half"};
    CHECK(settings_resolve(&s, SCHEME_OSS, bad_limit, 1, NULL, &e) == OSSC_E_CONFIG);
    CHECK(strstr(e.message, "'cacheLimit' must be a size") != NULL);
    const char *bad_val[] = {"chunkSize=lots"};
    CHECK(settings_resolve(&s, SCHEME_OSS, bad_val, 1, NULL, &e) == OSSC_E_CONFIG);
    const char *v1_s3[] = {"signature=v1"};
    CHECK(settings_resolve(&s, SCHEME_S3, v1_s3, 1, NULL, &e) == OSSC_E_CONFIG);

    fd = open(path, O_WRONLY | O_TRUNC);
    const char *unknown = "{\"logLevle\": \"info\"}";
    CHECK(write(fd, unknown, strlen(unknown)) == (ssize_t)strlen(unknown));
    close(fd);
    CHECK(settings_resolve(&s, SCHEME_OSS, NULL, 0, NULL, &e) == OSSC_E_CONFIG);
    CHECK(strstr(e.message, "did you mean 'logLevel'") != NULL);

    /* Aliyun's config.json: logLevel in its numbering (0 DEBUG, 1 INFO, 2 WARN, 3 ERROR),
     * its torch connector's objects accepted and left alone. */
    fd = open(path, O_WRONLY | O_TRUNC);
    const char *aliyun = "{\"logLevel\": 1, \"prefetch\": {\"vcpus\": 16, \"workers\": 16},"
                         " \"datasetConfig\": {\"prefetchWorker\": 2}, \"checkpointConfig\": {}}";
    CHECK(write(fd, aliyun, strlen(aliyun)) == (ssize_t)strlen(aliyun));
    close(fd);
    CHECK(settings_resolve(&s, SCHEME_OSS, NULL, 0, NULL, &e) == 0);
    CHECK(s.log_level == LOG_INFO && s.vcpus == 16 && s.workers == 16);
    const char *level0[] = {"logLevel=0"}, *level3[] = {"logLevel=3"}, *level4[] = {"logLevel=4"};
    CHECK(settings_resolve(&s, SCHEME_OSS, level0, 1, NULL, &e) == 0 && s.log_level == LOG_DEBUG);
    CHECK(settings_resolve(&s, SCHEME_OSS, level3, 1, NULL, &e) == 0 && s.log_level == LOG_ERROR);
    CHECK(settings_resolve(&s, SCHEME_OSS, level4, 1, NULL, &e) == OSSC_E_CONFIG);
    fd = open(path, O_WRONLY | O_TRUNC);
    const char *typo = "{\"datasetConfg\": {\"prefetchWorker\": 2}}";
    CHECK(write(fd, typo, strlen(typo)) == (ssize_t)strlen(typo));
    close(fd);
    CHECK(settings_resolve(&s, SCHEME_OSS, NULL, 0, NULL, &e) == OSSC_E_CONFIG);
    CHECK(strstr(e.message, "did you mean 'datasetConfig'") != NULL);
    unlink(path);
    unsetenv("OSSC_CONFIG");

    /* Addressing: path-style for a custom S3 endpoint, virtual for OSS. */
    setenv("OSSC_CONFIG", "", 1);
    const char *custom[] = {"endpoint=http://127.0.0.1:9000"};
    CHECK(settings_resolve(&s, SCHEME_S3, custom, 1, NULL, &e) == 0 && s.path_style == 1);
    CHECK(s.signature == SIG_AWS_V4);
    const char *oss[] = {"endpoint=oss-cn-hangzhou.aliyuncs.com"};
    CHECK(settings_resolve(&s, SCHEME_OSS, oss, 1, NULL, &e) == 0 && s.path_style == 0);
    unsetenv("OSSC_CONFIG");

    /* An explicit environment replaces the process's: CLI > env > default. */
    setenv("OSSC_RETRIES", "5", 1);
    const char *envp[] = {"OSSC_CONFIG=", "OSSC_PREFETCH_WORKERS=9", "OSS_ENDPOINT=http://e:1",
                          NULL};
    const char *workers[] = {"prefetch.workers=11"};
    CHECK(settings_resolve(&s, SCHEME_OSS, NULL, 0, envp, &e) == 0 && s.workers == 9);
    CHECK(s.retries == 8 && strcmp(s.endpoint, "http://e:1") == 0);
    CHECK(settings_resolve(&s, SCHEME_OSS, workers, 1, envp, &e) == 0 && s.workers == 11);
    unsetenv("OSSC_RETRIES");
    char *out = settings_to_json(&s, true);
    CHECK(out && strstr(out, "\"workers\":11") && strstr(out, "\"retries\":8"));
    free(out);

    /* A derived setting stays "auto" in config-file form; a given one is its number. */
    const char *chunk[] = {"config=", "chunkSize=8MiB"};
    CHECK(settings_resolve(&s, SCHEME_OSS, chunk, 2, envp + 1, &e) == 0);
    CHECK(s.derived == DERIVED_VCPUS && s.vcpus >= 2);
    out = settings_to_json(&s, true);
    CHECK(out && strstr(out, "\"vcpus\":\"auto\"") && strstr(out, "\"workers\":9"));
    CHECK(strstr(out, "\"chunkSize\":8388608"));
    free(out);
    out = settings_to_json(&s, false);
    CHECK(out && !strstr(out, "\"vcpus\":\"auto\"") && strstr(out, "\"vcpus\":"));
    free(out);
    const char *again[] = {"config=", "chunkSize=8MiB", "chunkSize=auto"};
    CHECK(settings_resolve(&s, SCHEME_OSS, again, 3, envp + 1, &e) == 0);
    CHECK(s.derived == (DERIVED_VCPUS | DERIVED_CHUNK_SIZE));
}

/* The derived defaults on machines this one is not (ARCHITECTURE.md, "Fetch defaults"). */
static void test_tuning(void)
{
    static const struct {
        int cores, threads, transfers;
    } rows[] = {{1, 2, 8}, {2, 2, 8}, {8, 8, 8}, {12, 12, 5}, {16, 16, 4},
                {32, 32, 2}, {64, 64, 2}, {192, 64, 2}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        tuning t = {.cores = rows[i].cores, .memory = 128ULL << 30};
        CHECK(tuning_threads(&t) == rows[i].threads);
        CHECK(tuning_transfers(tuning_threads(&t)) == rows[i].transfers);
    }
    /* A derived workers follows prefetch.vcpus as given; a given workers stays. */
    settings s;
    ossc_error e = {0};
    const char *envp[] = {"OSSC_CONFIG=", NULL};
    const char *given[][2] = {{"prefetch.vcpus=4", "prefetch.workers=auto"},
                              {"prefetch.vcpus=16", "prefetch.workers=auto"},
                              {"prefetch.vcpus=64", "prefetch.workers=auto"},
                              {"prefetch.vcpus=16", "prefetch.workers=8"}};
    const int workers[] = {8, 4, 2, 8};
    for (size_t i = 0; i < 4; i++)
        CHECK(settings_resolve(&s, SCHEME_OSS, given[i], 2, envp, &e) == 0 &&
              s.workers == workers[i]);
    CHECK(settings_resolve(&s, SCHEME_OSS, given[1], 1, envp, &e) == 0 && s.workers == 4 &&
          (s.derived & DERIVED_WORKERS)); /* workers left at its default */

    tuning t = {.cores = 16, .memory = 128ULL << 30};
    CHECK(tuning_chunk_size(&t, 8620000000ULL, 64) == 32ULL << 20);
    CHECK(tuning_chunk_size(&t, 1ULL << 30, 64) == 8ULL << 20);
    CHECK(tuning_chunk_size(&t, 1ULL << 20, 64) == 4ULL << 20);
    t.memory = 16ULL << 30; /* the window in flight stays under 1/16 of the memory */
    CHECK(tuning_chunk_size(&t, 8620000000ULL, 64) == 16ULL << 20);
    t.memory = 2ULL << 30; /* ... but no chunk is smaller than 4 MiB */
    CHECK(tuning_chunk_size(&t, 8620000000ULL, 64) == 4ULL << 20);
}

static void test_listing(void)
{
    const char *xml =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<ListBucketResult><Name>b</Name><EncodingType>url</EncodingType>"
        "<IsTruncated>true</IsTruncated><NextContinuationToken>tok%2Ben</NextContinuationToken>"
        "<Contents><Key>m/a+b%2Bc.bin</Key><Size>123</Size><ETag>\"e1\"</ETag></Contents>"
        "<Contents><Key>m/%E6%A8%A1.json</Key><Size>0</Size></Contents>"
        "</ListBucketResult>";
    list_page p;
    ossc_error e;
    CHECK(xml_parse_list_page(xml, strlen(xml), &p, &e) == 0);
    CHECK(p.count == 2 && p.truncated);
    CHECK(strcmp(p.objects[0].key, "m/a b+c.bin") == 0 && p.objects[0].size == 123);
    CHECK(strcmp(p.objects[0].etag, "\"e1\"") == 0);
    CHECK(strcmp(p.objects[1].key, "m/\xe6\xa8\xa1.json") == 0);
    CHECK(strcmp(p.next_token, "tok%2Ben") == 0); /* left for the caller */
    list_page_free(&p);

    const char *bad[] = {
        "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents></ListBucketResult>",
        "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
        "<Error><Code>AccessDenied</Code></Error>",
        "<ListBucketResult><Contents><Key>a</Key>",
        ("<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%zz</Key><Size>1"
         "</Size></Contents></ListBucketResult>"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(xml_parse_list_page(bad[i], strlen(bad[i]), &p, &e) == OSSC_E_PROTOCOL);

    char code[64], msg[256];
    const char *err = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>"
                      "<Message>The signature does not match</Message></Error>";
    xml_parse_error(err, strlen(err), code, sizeof(code), msg, sizeof(msg));
    CHECK(strcmp(code, "SignatureDoesNotMatch") == 0);
    CHECK(strcmp(msg, "The signature does not match") == 0);
    xml_parse_error("not xml", 7, code, sizeof(code), msg, sizeof(msg));
    CHECK(code[0] == '\0');
}

static void test_backoff(void)
{
    for (int attempt = 1; attempt < 20; attempt++) {
        long d = http_backoff_ms(attempt, 0);
        CHECK(d >= 50 && d <= 5000);
    }
    CHECK(http_backoff_ms(1, 3000) == 3000); /* the store's qos delay wins */
    int code;
    CHECK(http_classify_status(503, &code) == FAIL_THROTTLED);
    CHECK(http_classify_status(403, &code) == FAIL_PERMANENT && code == OSSC_E_AUTH);
    CHECK(http_classify_status(500, &code) == FAIL_TRANSIENT);
    CHECK(http_classify_status(404, &code) == FAIL_PERMANENT && code == OSSC_E_NOT_FOUND);
}

/* The one check of where a key lands below MODEL_DIR (and `ossc get`'s target). */
static void test_relative_name(void)
{
    ossc_error e;
    const char *rel = "unset";
    CHECK(ossc_relative_name("p/a/b.bin", "p/", &rel, &e) == 0 && strcmp(rel, "a/b.bin") == 0);
    CHECK(ossc_relative_name("p/dir/", "p/", &rel, &e) == 0 && rel == NULL);
    CHECK(ossc_relative_name("p/", "p/", &rel, &e) == 0 && rel == NULL);
    CHECK(ossc_relative_name("other/x", "p/", &rel, &e) == 0 && strcmp(rel, "other/x") == 0);
    const char *bad[] = {"p/../x", "p//x", "p/./x", "p/a/../../x", "p/a/..", "/abs", "p/.",
                         "p/a//b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(ossc_relative_name(bad[i], "p/", &rel, &e) == OSSC_E_PROTOCOL);
        CHECK(e.code == OSSC_E_PROTOCOL && strstr(e.message, bad[i]) != NULL);
    }
}

/* The jitter of one process's backoffs, n draws at the cap (0..2500 ms of spread each). */
static void backoff_draws(long *out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = http_backoff_ms(20, 0);
}

/* Every process backs off on its own schedule: two children forked from one parent (which
 * drew before, so a seed it holds is inherited) draw different jitter. */
static void test_backoff_differs_per_process(void)
{
    enum { N = 16 };
    long parent[N], drawn[2][N];
    backoff_draws(parent, N);
    for (int c = 0; c < 2; c++) {
        int fds[2];
        CHECK(pipe(fds) == 0);
        pid_t pid = fork();
        if (pid == 0) {
            long mine[N];
            backoff_draws(mine, N);
            _exit(write(fds[1], mine, sizeof(mine)) == (ssize_t)sizeof(mine) ? 0 : 1);
        }
        close(fds[1]);
        CHECK(pid > 0 && read(fds[0], drawn[c], sizeof(drawn[c])) == (ssize_t)sizeof(drawn[c]));
        close(fds[0]);
        int status;
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && !WEXITSTATUS(status));
    }
    CHECK(memcmp(drawn[0], drawn[1], sizeof(drawn[0])) != 0);
    CHECK(memcmp(drawn[0], parent, sizeof(parent)) != 0);
}

/* The session layout is shared by processes built at different times: pin every offset. */
static void test_session_layout(void)
{
    CHECK(offsetof(ossc_session_header, magic) == 0);
    CHECK(offsetof(ossc_session_header, version) == 4);
    CHECK(offsetof(ossc_session_header, header_size) == 6);
    CHECK(offsetof(ossc_session_header, state) == 8);
    CHECK(offsetof(ossc_session_header, owner_pid) == 12);
    CHECK(offsetof(ossc_session_header, n_objects) == 16);
    CHECK(offsetof(ossc_session_header, n_chunks) == 20);
    CHECK(offsetof(ossc_session_header, chunk_size) == 24);
    CHECK(offsetof(ossc_session_header, objects_offset) == 32);
    CHECK(offsetof(ossc_session_header, bits_offset) == 40);
    CHECK(offsetof(ossc_session_header, names_offset) == 48);
    CHECK(offsetof(ossc_session_header, control_size) == 56);
    CHECK(offsetof(ossc_session_header, progress) == 64);
    CHECK(offsetof(ossc_session_header, read_timeout_ms) == 68);
    CHECK(offsetof(ossc_session_header, heartbeat_ms) == 72);
    CHECK(offsetof(ossc_session_header, wanted) == 80);
    CHECK(offsetof(ossc_session_header, wanted_chunk) == 84);
    CHECK(offsetof(ossc_session_header, log_level) == 88);
    CHECK(offsetof(ossc_session_header, expire_time_sec) == 92);
    CHECK(offsetof(ossc_session_header, model_dir) == 96);
    CHECK(offsetof(ossc_session_header, log_path) == 4192);
    CHECK(offsetof(ossc_session_header, audit_path) == 5216);
    CHECK(offsetof(ossc_session_header, last_open_ms) == 6240);
    CHECK(offsetof(ossc_session_header, data_dir) == 6248);
    CHECK(offsetof(ossc_session_header, oss_path) == 7272);
    CHECK(offsetof(ossc_session_header, bytes_total) == 8296);
    CHECK(offsetof(ossc_session_header, bytes_done) == 8304);
    CHECK(offsetof(ossc_session_header, started_unix) == 8312);
    CHECK(offsetof(ossc_session_header, objects_failed) == 8320);
    CHECK(offsetof(ossc_session_header, current_object) == 8324);
    CHECK(offsetof(ossc_session_header, fetch_policy) == 8328);
    CHECK(offsetof(ossc_session_header, releases) == 8332);
    CHECK(offsetof(ossc_session_header, cache_limit) == 8336);
    CHECK(offsetof(ossc_session_header, bytes_held) == 8344);
    CHECK(sizeof(ossc_session_header) == 8352);
    CHECK(offsetof(ossc_session_object, size) == 0);
    CHECK(offsetof(ossc_session_object, first_chunk) == 8);
    CHECK(offsetof(ossc_session_object, n_chunks) == 12);
    CHECK(offsetof(ossc_session_object, name_offset) == 16);
    CHECK(offsetof(ossc_session_object, name_len) == 20);
    CHECK(offsetof(ossc_session_object, error) == 24);
    CHECK(offsetof(ossc_session_object, chunks_ready) == 28);
    CHECK(offsetof(ossc_session_object, last_open_ms) == 32);
    CHECK(sizeof(ossc_session_object) == 40);
    CHECK(OSSC_SESSION_MAGIC == 0x4353534fu && OSSC_SESSION_VERSION == 4);
    char name[OSSC_SESSION_PATH_MAX];
    ossc_session_name(name, sizeof(name), OSSC_SESSION_ROOT, 1000, OSSC_SESSION_PRIVATE,
                      "/models/m", 0);
    CHECK(strncmp(name, "/dev/shm/ossc-1000-", 19) == 0 && strlen(name) == 19 + 16);
    ossc_session_name(name, sizeof(name), OSSC_SESSION_ROOT, 0, OSSC_SESSION_PRIVATE,
                      "/models/m", 2);
    CHECK(strlen(name) > 2 && strcmp(name + strlen(name) - 2, "-2") == 0);
    ossc_session_name(name, sizeof(name), OSSC_SESSION_ROOT, 1000, 44, "/models/m", 0);
    CHECK(strncmp(name, "/dev/shm/ossc-g44-", 18) == 0 && strlen(name) == 18 + 16);

    /* Who may use a session's directory or file: owner uid, group, mode; euid; sharing. */
    CHECK(!ossc_session_access(1000, 1000, 040700, 1000, OSSC_SESSION_PRIVATE));
    CHECK(ossc_session_access(1001, 1000, 040700, 1000, OSSC_SESSION_PRIVATE));  /* another's */
    CHECK(ossc_session_access(1000, 1000, 040750, 1000, OSSC_SESSION_PRIVATE));  /* group r */
    CHECK(ossc_session_access(1000, 1000, 0100604, 1000, OSSC_SESSION_PRIVATE)); /* world r */
    CHECK(!ossc_session_access(1001, 44, 042750, 1000, 44));  /* a member's, shared with us */
    CHECK(!ossc_session_access(1000, 44, 0100640, 1000, 44));
    CHECK(ossc_session_access(1001, 45, 042750, 1000, 44));   /* another group's */
    CHECK(ossc_session_access(1001, 44, 042770, 1000, 44));   /* the group may write */
    CHECK(ossc_session_access(1001, 44, 042751, 1000, 44));   /* others may search */
    CHECK(!ossc_session_access(1000, 44, 042750, 1000, OSSC_SESSION_OWN_ANY));
    CHECK(ossc_session_access(1001, 44, 042750, 1000, OSSC_SESSION_OWN_ANY));

    /* The smallest file the check accepts: a header with no objects, every area empty. */
    static uint64_t bare[sizeof(ossc_session_header) / 8];
    ossc_session_header *h = (ossc_session_header *)bare;
    *h = (ossc_session_header){.magic = OSSC_SESSION_MAGIC, .version = OSSC_SESSION_VERSION,
                               .header_size = sizeof(*h), .chunk_size = 1 << 20,
                               .objects_offset = sizeof(*h), .bits_offset = sizeof(*h),
                               .names_offset = sizeof(*h), .control_size = sizeof(*h),
                               .model_dir = "/models/m", .data_dir = "/dev/shm/x/data"};
    CHECK(sizeof(*h) % 8 == 0 && ossc_session_check(h, sizeof(*h)) == NULL);
    h->control_size = sizeof(*h) - 1;
    CHECK(ossc_session_check(h, sizeof(*h) - 1) != NULL);
}

/* The check a process runs before it follows any offset in a control file: the owner's
 * layout passes, and each crafted variant is refused for the reason it was crafted for. */
static uint64_t image[16384 / 8]; /* 8-byte aligned, like a mapping */
static size_t image_size;

static ossc_session_header *fresh_image(void)
{
    image_size = control_image_build(image, sizeof(image), 3);
    return (ossc_session_header *)image;
}

static ossc_session_object *image_object(uint32_t i)
{
    ossc_session_header *h = (ossc_session_header *)image;
    return (ossc_session_object *)((char *)image + h->objects_offset) + i;
}

static char *image_name(uint32_t i)
{
    ossc_session_header *h = (ossc_session_header *)image;
    return (char *)image + h->names_offset + image_object(i)->name_offset;
}

/* Whether the current image (of size bytes) is refused with a reason containing why. */
static bool refused(uint64_t size, const char *why)
{
    const char *reason = ossc_session_check(image, size);
    if (reason && strstr(reason, why))
        return true;
    fprintf(stderr, "  expected a refusal for '%s', got '%s'\n", why, reason ? reason : "(none)");
    return false;
}

/* Object i's name replaced by one of the same length. */
static bool rename_object(uint32_t i, const char *name)
{
    if (strlen(name) != image_object(i)->name_len)
        return false;
    memcpy(image_name(i), name, strlen(name));
    return true;
}

static void test_session_check(void)
{
    ossc_session_header *h = fresh_image();
    CHECK(image_size > h->names_offset && h->n_objects == 3 && h->n_chunks == 7);
    CHECK(ossc_session_check(image, image_size) == NULL);
    CHECK(control_image_build(image, sizeof(image), 1) && ossc_session_check(image, h->control_size) == NULL);
    CHECK(control_image_build(image, sizeof(image), 0) && ossc_session_check(image, h->control_size) == NULL);
    CHECK(control_image_build(image, 100, 3) == 0);

    /* The file and the header. */
    h = fresh_image();
    CHECK(refused(sizeof(*h) - 1, "shorter than the header"));
    CHECK(refused(0, "shorter than the header"));
    CHECK(refused(image_size - 1, "control_size"));
    h->control_size++;
    CHECK(refused(image_size, "control_size"));
    h = fresh_image();
    h->magic ^= 1;
    CHECK(refused(image_size, "magic"));
    h = fresh_image();
    h->version = OSSC_SESSION_VERSION - 1;
    CHECK(refused(image_size, "version"));
    h = fresh_image();
    h->header_size = 7272;
    CHECK(refused(image_size, "header_size"));
    h = fresh_image();
    h->state = OSSC_SESSION_ENDED + 1;
    CHECK(refused(image_size, "state"));
    h->state = OSSC_SESSION_ENDED;
    CHECK(ossc_session_check(image, image_size) == NULL);
    h->chunk_size = 0;
    CHECK(refused(image_size, "chunk_size"));

    /* The header's strings. */
    h = fresh_image();
    memset(h->model_dir, 'm', sizeof(h->model_dir));
    CHECK(refused(image_size, "model_dir is not terminated"));
    h = fresh_image();
    snprintf(h->model_dir, sizeof(h->model_dir), "models/m");
    CHECK(refused(image_size, "model_dir is not absolute"));
    h = fresh_image();
    memset(h->log_path, 'l', sizeof(h->log_path));
    CHECK(refused(image_size, "log_path"));
    h = fresh_image();
    memset(h->audit_path, 'a', sizeof(h->audit_path));
    CHECK(refused(image_size, "audit_path"));
    h = fresh_image();
    memset(h->data_dir, 'd', sizeof(h->data_dir));
    CHECK(refused(image_size, "data_dir"));
    h = fresh_image();
    memset(h->oss_path, 'o', sizeof(h->oss_path));
    CHECK(refused(image_size, "oss_path"));

    /* The areas: inside the file, in order, aligned, large enough for their counts. */
    h = fresh_image();
    h->objects_offset = 64;
    CHECK(refused(image_size, "overlaps the header"));
    h = fresh_image();
    h->objects_offset += 4;
    CHECK(refused(image_size, "object table is not 8-byte aligned"));
    h = fresh_image();
    h->bits_offset += 1;
    CHECK(refused(image_size, "ready bits are not 8-byte aligned"));
    h = fresh_image();
    h->names_offset = image_size + 1;
    CHECK(refused(image_size, "past the end of the file"));
    h->names_offset = UINT64_MAX;
    CHECK(refused(image_size, "past the end of the file"));
    h = fresh_image();
    h->bits_offset = UINT64_MAX - 7;
    CHECK(refused(image_size, "ready bits start after the names"));
    h = fresh_image();
    h->objects_offset = UINT64_MAX - 7;
    CHECK(refused(image_size, "object table starts after the ready bits"));
    h = fresh_image();
    h->n_objects = 4;
    CHECK(refused(image_size, "object table runs into the ready bits"));
    h->n_objects = UINT32_MAX;
    CHECK(refused(image_size, "object table runs into the ready bits"));
    h = fresh_image();
    h->n_chunks = 65;
    CHECK(refused(image_size, "ready bits run into the names"));
    h->n_chunks = UINT32_MAX;
    CHECK(refused(image_size, "ready bits run into the names"));

    /* The objects' chunk ranges. */
    h = fresh_image();
    image_object(0)->n_chunks = 3;
    CHECK(refused(image_size, "n_chunks does not match its size"));
    h = fresh_image();
    image_object(0)->size = UINT64_MAX;
    CHECK(refused(image_size, "n_chunks does not match its size"));
    h = fresh_image();
    h->chunk_size = 1; /* 12289 chunks for the first object, and not 4 */
    CHECK(refused(image_size, "n_chunks does not match its size"));
    h = fresh_image();
    image_object(1)->first_chunk = 3; /* overlaps the first object's last chunk */
    CHECK(refused(image_size, "do not follow"));
    h = fresh_image();
    image_object(0)->first_chunk = 1;
    CHECK(refused(image_size, "do not follow"));
    h = fresh_image();
    h->n_chunks = 6;
    CHECK(refused(image_size, "more chunks than the header"));
    h->n_chunks = 8;
    CHECK(refused(image_size, "do not add up"));
    h = fresh_image();
    image_object(2)->error = EIO;
    CHECK(ossc_session_check(image, image_size) == NULL);
    image_object(2)->error = -EIO;
    CHECK(refused(image_size, "not an errno"));
    image_object(2)->error = 4096;
    CHECK(refused(image_size, "not an errno"));

    /* The names. */
    h = fresh_image();
    image_object(1)->name_len = 0;
    CHECK(refused(image_size, "name is empty"));
    h = fresh_image();
    image_object(2)->name_len++; /* the last name then runs one byte past the file */
    CHECK(refused(image_size, "runs past the file"));
    h = fresh_image();
    image_object(2)->name_offset = UINT32_MAX;
    image_object(2)->name_len = UINT32_MAX;
    CHECK(refused(image_size, "runs past the file"));
    h = fresh_image();
    image_name(0)[image_object(0)->name_len] = 'x'; /* unterminated */
    CHECK(refused(image_size, "does not end at name_len"));
    h = fresh_image();
    image_object(0)->name_len--;
    CHECK(refused(image_size, "does not end at name_len"));
    h = fresh_image();
    image_name(1)[3] = '\0'; /* a NUL inside the name */
    CHECK(refused(image_size, "safe relative path"));
    h = fresh_image();
    image_object(1)->name_offset = 0; /* the same bytes as the first object's name */
    image_object(1)->name_len = image_object(0)->name_len;
    CHECK(refused(image_size, "overlaps the one before"));
    const char *unsafe[] = {"/ub/dir/weights.bin", "sub//ir/weights.bin", "sub/./r/weights.bin",
                            "sub/../weights.binx", "../dir/weights.binx", "sub/dir/weights.bi/",
                            "sub/dir/weights/../", "./b/dir/weights.bin"};
    for (size_t i = 0; i < sizeof(unsafe) / sizeof(unsafe[0]); i++) {
        h = fresh_image();
        CHECK(rename_object(1, unsafe[i]));
        CHECK(refused(image_size, "safe relative path"));
    }
    h = fresh_image();
    image_object(2)->name_len = 2;
    memcpy(image_name(2), "..", 3);
    CHECK(refused(image_size, "safe relative path"));
    h = fresh_image();
    CHECK(rename_object(1, "sub/.di/...ghts..in")); /* dots that are no segment of their own */
    CHECK(ossc_session_check(image, image_size) == NULL);
}

int main(void)
{
    test_session_layout();
    test_session_check();
    test_crc64();
    test_crc32c();
    test_encoding();
    test_urls();
    test_settings();
    test_tuning();
    test_listing();
    test_backoff();
    test_relative_name();
    test_backoff_differs_per_process();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
