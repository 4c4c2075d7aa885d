/* credentials.c: access keys from the environment or from a JSON credentials file
 * (AccessKeyId, AccessKeySecret, SecurityToken, Expiration) that is re-read before it expires
 * or whenever it changes. Secrets never reach a log line or an error message. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define REFRESH_BEFORE_EXPIRY_SEC 300
#define STAT_INTERVAL_SEC 1

static bool copy_field(char *dst, size_t cap, const char *src)
{
    if (!src || strlen(src) >= cap)
        return false;
    strcpy(dst, src);
    return true;
}

/* "2026-01-02T03:04:05Z" -> unix time; 0 if absent or unparsable. */
static time_t parse_iso8601(const char *text)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!text)
        return 0;
    const char *end = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return 0;
    return timegm(&tm);
}

static int read_file(cred_provider *p, ossc_error *err)
{
    struct stat st;
    FILE *f = fopen(p->file, "re");
    if (!f || fstat(fileno(f), &st) != 0) {
        err_set(err, OSSC_E_CREDENTIALS, "cannot read credentials file %s: %s", p->file,
                strerror(errno));
        if (f)
            fclose(f);
        return OSSC_E_CREDENTIALS;
    }
    char buf[16384];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *root = cJSON_ParseWithLength(buf, n);
    credentials c;
    memset(&c, 0, sizeof(c));
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "AccessKeyId"));
    const char *secret =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "AccessKeySecret"));
    const char *token =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "SecurityToken"));
    const char *expiration =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "Expiration"));
    int rc = 0;
    if (!root || !cJSON_IsObject(root)) {
        err_set(err, OSSC_E_CREDENTIALS, "credentials file %s is not a JSON object", p->file);
        rc = OSSC_E_CREDENTIALS;
    } else if (!id || !*id || !secret || !*secret) {
        err_set(err, OSSC_E_CREDENTIALS, "credentials file %s lacks AccessKeyId or "
                "AccessKeySecret", p->file);
        rc = OSSC_E_CREDENTIALS;
    } else if (!copy_field(c.access_key_id, sizeof(c.access_key_id), id) ||
               !copy_field(c.access_key_secret, sizeof(c.access_key_secret), secret) ||
               (token && !copy_field(c.security_token, sizeof(c.security_token), token))) {
        err_set(err, OSSC_E_CREDENTIALS, "credentials file %s has a value that is too long",
                p->file);
        rc = OSSC_E_CREDENTIALS;
    } else if (expiration && !parse_iso8601(expiration)) {
        err_set(err, OSSC_E_CREDENTIALS, "credentials file %s: Expiration '%.40s' is not an "
                "ISO 8601 UTC time", p->file, expiration);
        rc = OSSC_E_CREDENTIALS;
    }
    cJSON_Delete(root);
    if (rc == 0) {
        p->current = c;
        p->expiration = parse_iso8601(expiration);
        p->file_mtime = st.st_mtime;
    }
    return rc;
}

int creds_init(cred_provider *p, int scheme, const char *file, ossc_error *err)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    if (file && *file) {
        snprintf(p->file, sizeof(p->file), "%s", file);
        p->last_check = time(NULL);
        return read_file(p, err);
    }
    const char *id = getenv("OSS_ACCESS_KEY_ID");
    const char *secret = getenv("OSS_ACCESS_KEY_SECRET");
    const char *token = getenv("OSS_SESSION_TOKEN");
    const char *names = "OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET";
    if (scheme == SCHEME_S3 && !id && !secret) {
        id = getenv("AWS_ACCESS_KEY_ID");
        secret = getenv("AWS_SECRET_ACCESS_KEY");
        token = getenv("AWS_SESSION_TOKEN");
        names = "OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET or AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY";
    }
    if (!id || !*id || !secret || !*secret) {
        err_set(err, OSSC_E_CREDENTIALS, "no credentials: set %s, or a credentials file "
                "(OSSC_CREDENTIALS_FILE)", names);
        return OSSC_E_CREDENTIALS;
    }
    if (!copy_field(p->current.access_key_id, sizeof(p->current.access_key_id), id) ||
        !copy_field(p->current.access_key_secret, sizeof(p->current.access_key_secret), secret) ||
        (token && !copy_field(p->current.security_token, sizeof(p->current.security_token),
                              token))) {
        err_set(err, OSSC_E_CREDENTIALS, "a credential in the environment is too long");
        return OSSC_E_CREDENTIALS;
    }
    return 0;
}

int creds_get(cred_provider *p, credentials *out, ossc_error *err)
{
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    time_t now = time(NULL);
    if (*p->file && now - p->last_check >= STAT_INTERVAL_SEC) {
        p->last_check = now;
        struct stat st;
        bool expiring = p->expiration && now >= p->expiration - REFRESH_BEFORE_EXPIRY_SEC;
        bool changed = stat(p->file, &st) == 0 && st.st_mtime != p->file_mtime;
        if (expiring || changed) {
            ossc_error e;
            err_clear(&e);
            rc = read_file(p, &e);
            if (rc && p->expiration && now < p->expiration) {
                /* The old keys still work: keep them and say so once per check. */
                LOGW("%s; keeping the current credentials until they expire", e.message);
                rc = 0;
            } else if (rc && err) {
                *err = e;
            }
        }
    }
    if (rc == 0)
        *out = p->current;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int creds_set(cred_provider *p, const char *id, const char *secret, const char *token,
              ossc_error *err)
{
    credentials c;
    memset(&c, 0, sizeof(c));
    if (!id || !*id || !secret || !*secret) {
        err_set(err, OSSC_E_CREDENTIALS, "no credentials: the access key id or secret is empty");
        return OSSC_E_CREDENTIALS;
    }
    if (!copy_field(c.access_key_id, sizeof(c.access_key_id), id) ||
        !copy_field(c.access_key_secret, sizeof(c.access_key_secret), secret) ||
        (token && !copy_field(c.security_token, sizeof(c.security_token), token))) {
        err_set(err, OSSC_E_CREDENTIALS, "a credential given is too long");
        return OSSC_E_CREDENTIALS;
    }
    pthread_mutex_lock(&p->lock);
    p->current = c;
    p->file[0] = '\0'; /* the caller provides them from now on */
    p->expiration = 0;
    pthread_mutex_unlock(&p->lock);
    memset(&c, 0, sizeof(c));
    return 0;
}

void creds_destroy(cred_provider *p)
{
    pthread_mutex_destroy(&p->lock);
    memset(&p->current, 0, sizeof(p->current));
}
