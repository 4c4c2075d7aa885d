/* session_layout.h: the node-wide session in /dev/shm, shared by the owner process
 * (ossc-owner, over libossc), every process with the shim, and the tools that report on it.
 * Fixed-width, versioned; test_session_layout (preload/tests/test_engine.c) pins every offset.
 *
 *   /dev/shm/ossc-<euid>-<16 hex digits of FNV-1a-64(real path of MODEL_DIR)>[-<n>]/  (0700)
 *   /dev/shm/ossc-g<gid>-<hash>[-<n>]/  (02750, group gid) when shared with sharedGroup: its
 *                  files 0640, so the group's members attach read-only
 *       control        header, object table, chunk ready bits, names (0600). The owner holds
 *                      flock(LOCK_EX) on it for as long as it lives.
 *       users          empty (0600). Every attached process holds flock(LOCK_SH) on it; the
 *                      owner ends the session once it can take LOCK_EX (no user is left) and
 *                      has been able to for max(expireTimeSec, OSSC_SESSION_LINGER_MIN_MS).
 *       materialized   what the owner created in MODEL_DIR, a path a line (files, then
 *                      directories): removed again when the session ends.
 *       data/<index>   one file per large object, sized to it (0600; in cacheDir when that
 *                      is set: the header's data_dir says where); unlinked (and its ready
 *                      bits cleared) expireTimeSec after the last open of a complete session,
 *                      created again when a reader asks for one of its chunks. With
 *                      prefetch.policy lazy (or past cacheLimit) none exists before an open
 *                      asks for it; under cacheLimit the owner releases the least recently
 *                      opened complete ones that no process holds open or mapped. The
 *                      file of a failed fetch is unlinked once nobody holds it (readers
 *                      take flock(LOCK_SH) on every data file they open; the owner unlinks
 *                      it under LOCK_EX), so that the next open fetches the object anew.
 *
 * A directory of that name that fails ossc_session_access (session_check.h) is never used:
 * the next candidate name (-1, -2, ... up to OSSC_SESSION_CANDIDATES) is.
 *
 * Only plain C and <stdint.h>/<stdio.h>: the shim includes it and links nothing but libc.
 */
#ifndef OSSC_SESSION_LAYOUT_H
#define OSSC_SESSION_LAYOUT_H

#include <stdint.h>
#include <stdio.h>

#define OSSC_SESSION_MAGIC 0x4353534fu /* "OSSC" little-endian */
#define OSSC_SESSION_VERSION 4
#define OSSC_SESSION_ROOT "/dev/shm"
#define OSSC_SESSION_PREFIX "ossc-"
#define OSSC_SESSION_CANDIDATES 8  /* names tried when a planted directory holds the first */
#define OSSC_SESSION_PATH_MAX 128
#define OSSC_SESSION_LINGER_MIN_MS 2000 /* bridges an exec between two users */
#define OSSC_MODEL_DIR_MAX 4096

/* What the owner fetches before anyone asks (prefetch.policy). */
enum ossc_fetch_policy {
    OSSC_FETCH_EAGER = 0, /* every large object, in order (up to cacheLimit) */
    OSSC_FETCH_LAZY = 1,  /* none: an open fetches its object whole */
};

enum ossc_session_state {
    OSSC_SESSION_CREATING = 0, /* the owner is listing and materializing: wait */
    OSSC_SESSION_FETCHING = 1,
    OSSC_SESSION_COMPLETE = 2,
    OSSC_SESSION_FAILED = 3,   /* the prefetch stopped (the owner ended while fetching):
                                * missing ranges fail with EIO. One object that failed is
                                * its own error, the state COMPLETE */
    OSSC_SESSION_ENDED = 4,    /* being removed: attach to nothing, start anew */
};

typedef struct ossc_session_header {
    uint32_t magic;             /*   0 */
    uint16_t version;           /*   4 */
    uint16_t header_size;       /*   6 */
    uint32_t state;             /*   8 enum ossc_session_state */
    uint32_t owner_pid;         /*  12 */
    uint32_t n_objects;         /*  16 */
    uint32_t n_chunks;          /*  20 */
    uint64_t chunk_size;        /*  24 */
    uint64_t objects_offset;    /*  32 */
    uint64_t bits_offset;       /*  40 */
    uint64_t names_offset;      /*  48 */
    uint64_t control_size;      /*  56 */
    uint32_t progress;          /*  64 futex: bumped whenever a chunk lands or fails */
    uint32_t read_timeout_ms;   /*  68 a reader waiting longer fails with EIO */
    uint64_t heartbeat_ms;      /*  72 owner's CLOCK_MONOTONIC, every 100 ms */
    uint32_t wanted;            /*  80 futex: bumped by a reader that wants wanted_chunk */
    uint32_t wanted_chunk;      /*  84 global chunk index a blocked reader needs next */
    uint32_t log_level;         /*  88 */
    uint32_t expire_time_sec;   /*  92 */
    char model_dir[OSSC_MODEL_DIR_MAX]; /* 96 */
    char log_path[1024];        /* 4192 resolved logPath, "" for stderr */
    char audit_path[1024];      /* 5216 resolved auditPath, "" for none */
    uint64_t last_open_ms;      /* 6240 CLOCK_MONOTONIC of the last open of a large file:
                                 *      expireTimeSec counts from here */
    char data_dir[1024];        /* 6248 where data/<index> files live: <session>/data, or
                                 *      <cacheDir>/ossc-<euid>-<hash> */
    char oss_path[1024];        /* 7272 the store URL the session serves */
    uint64_t bytes_total;       /* 8296 large objects' bytes */
    uint64_t bytes_done;        /* 8304 landed so far (a refetch counts again) */
    uint64_t started_unix;      /* 8312 wall-clock second the owner started */
    uint32_t objects_failed;    /* 8320 objects whose last fetch failed (a new one may
                                 *      succeed: an open asks for it) */
    int32_t current_object;     /* 8324 the object a chunk landed for last, -1 before */
    uint32_t fetch_policy;      /* 8328 enum ossc_fetch_policy */
    uint32_t releases;          /* 8332 objects released to keep under cache_limit */
    uint64_t cache_limit;       /* 8336 bytes the data files may hold, 0 for no budget */
    uint64_t bytes_held;        /* 8344 bytes of the data files present now */
} ossc_session_header;          /* 8352 */

typedef struct ossc_session_object {
    uint64_t size;              /*  0 */
    uint32_t first_chunk;       /*  8 global index of its first chunk */
    uint32_t n_chunks;          /* 12 */
    uint32_t name_offset;       /* 16 relative path below MODEL_DIR, from names_offset */
    uint32_t name_len;          /* 20 */
    int32_t error;              /* 24 0, or the errno readers get (EIO, EACCES, ENOENT) */
    uint32_t chunks_ready;      /* 28 */
    uint64_t last_open_ms;      /* 32 CLOCK_MONOTONIC of its last open (the shim's): the
                                 *    budget releases the least recently opened first */
} ossc_session_object;          /* 40 */

/* FNV-1a-64: the session's name from the real path of MODEL_DIR. */
static inline uint64_t ossc_session_hash(const char *real_model_dir)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *s = real_model_dir; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

/* Who a session belongs to: sessions are private to the uid that made them, unless
 * sharedGroup names a group whose members may then attach read-only. */
#define OSSC_SESSION_PRIVATE (-1L)
#define OSSC_SESSION_OWN_ANY (-2L) /* status and clean-up: any session this uid made */

/* The session directory's name for the real path of MODEL_DIR: ossc-<uid>-<hash> when
 * private (group < 0), ossc-g<group>-<hash> when shared with that group. Candidate 0 is the
 * usual one, 1.. the fallbacks past a planted directory. Returns snprintf's count. */
static inline int ossc_session_name(char *buf, size_t cap, const char *root, unsigned uid,
                                    long group, const char *real_model_dir, int candidate)
{
    unsigned long long h = (unsigned long long)ossc_session_hash(real_model_dir);
    char owner[24];
    if (group >= 0)
        snprintf(owner, sizeof(owner), "g%ld", group);
    else
        snprintf(owner, sizeof(owner), "%u", uid);
    return candidate ? snprintf(buf, cap, "%s/" OSSC_SESSION_PREFIX "%s-%016llx-%d", root, owner,
                                h, candidate)
                     : snprintf(buf, cap, "%s/" OSSC_SESSION_PREFIX "%s-%016llx", root, owner, h);
}

#endif
