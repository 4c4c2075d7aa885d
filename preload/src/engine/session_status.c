/* session_status.c: what `ossc status` shows: this uid's sessions on the node, read from their
 * control files and locks (who owns it, how many use it, how far the prefetch is, what it
 * holds in memory or on disk, which objects failed), and `ossc gc`'s removal of dead ones. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "session.h"
#include "session_check.h"
#include "session_group.h"

static const char *state_name(uint32_t state)
{
    static const char *const names[] = {"creating", "fetching", "complete", "failed", "ended"};
    return state < sizeof(names) / sizeof(names[0]) ? names[state] : "unknown";
}

int session_lock_holder_pids(int fd, int *pids, int cap)
{
    struct stat st;
    FILE *f = fstat(fd, &st) == 0 ? fopen("/proc/locks", "re") : NULL;
    if (!f)
        return -1;
    char id[64], line[256];
    snprintf(id, sizeof(id), " %02x:%02x:%llu ", major(st.st_dev), minor(st.st_dev),
             (unsigned long long)st.st_ino);
    int n = 0;
    /* "1: FLOCK  ADVISORY  READ  1234 00:1a:5678 0 EOF"; "1: -> FLOCK ..." waits for it. */
    while (fgets(line, sizeof(line), f)) {
        char *read = strstr(line, " READ ");
        if (!strstr(line, id) || !strstr(line, "FLOCK") || !read || strstr(line, "->"))
            continue;
        if (n < cap)
            pids[n] = atoi(read + strlen(" READ "));
        n++;
    }
    fclose(f);
    return n;
}

int session_lock_holders(int fd) { return session_lock_holder_pids(fd, NULL, 0); }

/* Bytes the files of a data directory hold (allocated, not their sizes). */
static uint64_t held_bytes(const char *dir, long group)
{
    const char *why;
    int fd = session_dir_open(dir, false, group, &why);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    uint64_t total = 0;
    struct dirent *e;
    struct stat st;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.' && fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            total += (uint64_t)st.st_blocks * 512;
    if (d)
        closedir(d);
    return total;
}

/* Sessions this uid may read: its own, and those that members of its groups share with it. */
static long readable_as(const char *path)
{
    struct stat st;
    bool shared = stat(path, &st) == 0 && st.st_uid != geteuid() && session_in_group(st.st_gid);
    return shared ? (long)st.st_gid : OSSC_SESSION_OWN_ANY;
}

/* One session as a JSON object; NULL if path is not a session directory of ours. */
static cJSON *describe(const char *path, const char *only_model_dir)
{
    const char *why;
    long group = readable_as(path);
    int dirfd = session_dir_open(path, false, group, &why);
    if (dirfd < 0)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", path);
    bool alive = session_owner_alive(dirfd, group);
    /* An owner still listing the store holds the directory, but has no control file yet. */
    bool starting = !alive && flock(dirfd, LOCK_SH | LOCK_NB) != 0;
    flock(dirfd, LOCK_UN);
    int ufd = session_file_open(dirfd, "users", O_RDONLY, group);
    cJSON_AddNumberToObject(o, "users", ufd >= 0 ? session_lock_holders(ufd) : 0);
    if (ufd >= 0)
        close(ufd);
    cJSON_AddBoolToObject(o, "ownerAlive", alive);
    int fd = session_file_open(dirfd, "control", O_RDONLY, group);
    struct stat st;
    void *map = MAP_FAILED;
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0)
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    const char *bad = map == MAP_FAILED ? "no control file"
                                        : ossc_session_check(map, (uint64_t)st.st_size);
    if (bad) {
        cJSON_AddStringToObject(o, "state", alive || starting ? "creating" : "broken");
        cJSON_AddStringToObject(o, "problem", bad);
    } else {
        const ossc_session_header *h = map;
        if (only_model_dir && strcmp(h->model_dir, only_model_dir) != 0) {
            cJSON_Delete(o);
            o = NULL;
            goto out;
        }
        cJSON_AddStringToObject(o, "state", alive ? state_name(h->state) : "dead");
        cJSON_AddStringToObject(o, "modelDir", h->model_dir);
        cJSON_AddStringToObject(o, "ossPath", h->oss_path);
        cJSON_AddNumberToObject(o, "ownerPid", h->owner_pid);
        cJSON_AddNumberToObject(o, "startedUnix", (double)h->started_unix);
        cJSON_AddNumberToObject(o, "objects", h->n_objects);
        cJSON_AddNumberToObject(o, "bytesTotal", (double)h->bytes_total);
        cJSON_AddNumberToObject(o, "bytesDone", (double)h->bytes_done);
        cJSON_AddStringToObject(o, "dataDir", h->data_dir);
        cJSON_AddStringToObject(o, "policy", h->fetch_policy == OSSC_FETCH_LAZY ? "lazy"
                                                                                : "eager");
        cJSON_AddNumberToObject(o, "bytesHeld", (double)h->bytes_held);
        cJSON_AddNumberToObject(o, "cacheLimit", (double)h->cache_limit);
        cJSON_AddNumberToObject(o, "releases", h->releases);
        cJSON_AddNumberToObject(o, "objectsFailed", h->objects_failed);
        uint64_t held = held_bytes(h->data_dir, group);
        bool in_memory =
            strncmp(h->data_dir, OSSC_SESSION_ROOT "/", strlen(OSSC_SESSION_ROOT) + 1) == 0;
        cJSON_AddNumberToObject(o, "memoryBytes", in_memory ? (double)held : 0);
        cJSON_AddNumberToObject(o, "diskBytes", in_memory ? 0 : (double)held);
        const ossc_session_object *objs =
            (const ossc_session_object *)((const char *)map + h->objects_offset);
        const char *names = (const char *)map + h->names_offset;
        int32_t current = h->current_object;
        cJSON_AddStringToObject(o, "currentFile", current >= 0 && (uint32_t)current < h->n_objects
                                                     ? names + objs[current].name_offset : "");
        if (only_model_dir) {
            /* One session asked for by MODEL_DIR: its large files too, with their data files
             * (the Python connector's prepare_directory fills placeholders from them). */
            cJSON *files = cJSON_AddArrayToObject(o, "files");
            for (uint32_t i = 0; i < h->n_objects; i++) {
                cJSON *f = cJSON_CreateObject();
                char data[sizeof(h->data_dir) + 16];
                snprintf(data, sizeof(data), "%s/%u", h->data_dir, i);
                cJSON_AddStringToObject(f, "file", names + objs[i].name_offset);
                cJSON_AddNumberToObject(f, "size", (double)objs[i].size);
                cJSON_AddStringToObject(f, "data", data);
                cJSON_AddBoolToObject(f, "ready", objs[i].chunks_ready == objs[i].n_chunks);
                cJSON_AddItemToArray(files, f);
            }
        }
        cJSON *errors = cJSON_AddArrayToObject(o, "errors");
        for (uint32_t i = 0; i < h->n_objects; i++) {
            if (!objs[i].error)
                continue;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "file", names + objs[i].name_offset);
            cJSON_AddStringToObject(e, "error", strerror(objs[i].error));
            cJSON_AddItemToArray(errors, e);
        }
    }
out:
    if (map != MAP_FAILED)
        munmap(map, (size_t)st.st_size);
    if (fd >= 0)
        close(fd);
    close(dirfd);
    return o;
}

/* Whether a directory entry of OSSC_SESSION_ROOT is named as this uid's sessions are
 * (private, or shared with a group: describe checks that it is ours), for MODEL_DIR's hash
 * when hash is not NULL. */
static bool named_ours(const char *name, const char *hash)
{
    char own[32];
    snprintf(own, sizeof(own), OSSC_SESSION_PREFIX "%u-", (unsigned)geteuid());
    if (strncmp(name, own, strlen(own)) != 0 &&
        strncmp(name, OSSC_SESSION_PREFIX "g", strlen(OSSC_SESSION_PREFIX "g")) != 0)
        return false;
    return strlen(name) < OSSC_SESSION_PATH_MAX - sizeof(OSSC_SESSION_ROOT "/") &&
           (!hash || strstr(name, hash));
}

OSSC_API char *ossc_sessions_json(const char *model_dir, ossc_error *err)
{
    err_clear(err);
    cJSON *list = cJSON_CreateArray();
    char path[OSSC_SESSION_PATH_MAX], real[PATH_MAX], hash[24];
    if (model_dir && !realpath(model_dir, real))
        goto done; /* no MODEL_DIR, no session */
    if (model_dir)
        snprintf(hash, sizeof(hash), "-%016llx", (unsigned long long)ossc_session_hash(real));
    DIR *d = opendir(OSSC_SESSION_ROOT);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!named_ours(e->d_name, model_dir ? hash : NULL))
            continue;
        snprintf(path, sizeof(path), OSSC_SESSION_ROOT "/%.100s", e->d_name);
        cJSON *o = describe(path, model_dir ? real : NULL);
        if (o)
            cJSON_AddItemToArray(list, o);
    }
    if (d)
        closedir(d);
done:;
    char *out = cJSON_PrintUnformatted(list);
    cJSON_Delete(list);
    if (!out)
        err_set(err, OSSC_E_NOMEM, "out of memory");
    return out;
}

OSSC_API int ossc_session_reap(const char *path, int force)
{
    return session_reap(path, force != 0);
}

OSSC_API char *ossc_session_dir(const char *model_dir)
{
    char real[PATH_MAX], *path = malloc(OSSC_SESSION_PATH_MAX);
    if (path)
        ossc_session_name(path, OSSC_SESSION_PATH_MAX, OSSC_SESSION_ROOT, (unsigned)geteuid(),
                          OSSC_SESSION_PRIVATE, realpath(model_dir, real) ? real : model_dir, 0);
    return path;
}

/* With LOCK_SH taken on users (it waits while an owner ends the session): whether the
 * session in dirfd serves real, is not ending, its owner lives, and users is still its. */
static bool serves_live(int dirfd, int users, const char *real, long group)
{
    int fd = session_file_open(dirfd, "control", O_RDONLY, group);
    ossc_session_header h;
    bool ok = fd >= 0 && pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
              h.magic == OSSC_SESSION_MAGIC && h.version == OSSC_SESSION_VERSION &&
              h.state != OSSC_SESSION_ENDED && memchr(h.model_dir, 0, sizeof(h.model_dir)) &&
              strcmp(h.model_dir, real) == 0 &&
              flock(fd, LOCK_SH | LOCK_NB) != 0; /* the owner holds LOCK_EX while it lives */
    struct stat now, held;
    ok = ok && fstatat(dirfd, "users", &now, AT_SYMLINK_NOFOLLOW) == 0 &&
         fstat(users, &held) == 0 && now.st_ino == held.st_ino;
    if (fd >= 0)
        close(fd);
    return ok;
}

OSSC_API int ossc_session_use(const char *model_dir, const char *shared_group)
{
    char real[PATH_MAX], path[OSSC_SESSION_PATH_MAX];
    long group;
    if (!realpath(model_dir, real) || ossc_session_group(shared_group, &group) != 0)
        return -1;
    for (int c = 0; c < OSSC_SESSION_CANDIDATES; c++) {
        ossc_session_name(path, sizeof(path), OSSC_SESSION_ROOT, (unsigned)geteuid(), group,
                          real, c);
        const char *why;
        int dirfd = session_dir_open(path, false, group, &why);
        if (dirfd < 0)
            continue;
        int fd = session_file_open(dirfd, "users", O_RDONLY, group);
        bool live = fd >= 0 && flock(fd, LOCK_SH) == 0 && serves_live(dirfd, fd, real, group);
        close(dirfd);
        if (live)
            return fd;
        if (fd >= 0)
            close(fd);
    }
    return -1;
}
