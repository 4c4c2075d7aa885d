/* test_engine.c: unit tests of the engine's pure parts: CRC-64, encoding, endpoints, settings,
 * the listing and error parsers, backoff. The network parts are tested against a real store
 * from Python (tests/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <stddef.h>

#include "internal.h"
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
    char *out = settings_to_json(&s);
    CHECK(out && strstr(out, "\"workers\":11") && strstr(out, "\"retries\":8"));
    free(out);
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
        "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%zz</Key><Size>1"
        "</Size></Contents></ListBucketResult>",
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
    CHECK(sizeof(ossc_session_header) == 7272);
    CHECK(offsetof(ossc_session_object, size) == 0);
    CHECK(offsetof(ossc_session_object, first_chunk) == 8);
    CHECK(offsetof(ossc_session_object, n_chunks) == 12);
    CHECK(offsetof(ossc_session_object, name_offset) == 16);
    CHECK(offsetof(ossc_session_object, name_len) == 20);
    CHECK(offsetof(ossc_session_object, error) == 24);
    CHECK(offsetof(ossc_session_object, chunks_ready) == 28);
    CHECK(sizeof(ossc_session_object) == 32);
    CHECK(OSSC_SESSION_MAGIC == 0x4353534fu && OSSC_SESSION_VERSION == 2);
}

int main(void)
{
    test_session_layout();
    test_crc64();
    test_encoding();
    test_urls();
    test_settings();
    test_listing();
    test_backoff();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
