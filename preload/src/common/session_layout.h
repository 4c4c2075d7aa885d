/* session_layout.h: the node-wide session in /dev/shm, shared by the owner (libossc) and every
 * process with the shim. Fixed-width, versioned; tests/test_session_layout pins every offset.
 *
 *   /dev/shm/ossc-<16 hex digits of FNV-1a-64(real path of MODEL_DIR)>/
 *       control        header, object table, chunk ready bits, names
 *       data/<index>   one tmpfs file per large object, sized to it (in cacheDir when that
 *                      is set: the header's data_dir says where); unlinked (and its ready
 *                      bits cleared) expireTimeSec after the last open of a complete session,
 *                      created again when a reader asks for one of its chunks
 *
 * Only plain C and <stdint.h>: the shim includes it and links nothing but libc.
 */
#ifndef OSSC_SESSION_LAYOUT_H
#define OSSC_SESSION_LAYOUT_H

#include <stdint.h>

#define OSSC_SESSION_MAGIC 0x4353534fu /* "OSSC" little-endian */
#define OSSC_SESSION_VERSION 2
#define OSSC_SESSION_ROOT "/dev/shm"
#define OSSC_SESSION_PREFIX "ossc-"
#define OSSC_MODEL_DIR_MAX 4096

enum ossc_session_state {
    OSSC_SESSION_CREATING = 0, /* the owner is listing and materializing: wait */
    OSSC_SESSION_FETCHING = 1,
    OSSC_SESSION_COMPLETE = 2,
    OSSC_SESSION_FAILED = 3,
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
                                 *      <cacheDir>/ossc-<hash> */
} ossc_session_header;          /* 7272 */

typedef struct ossc_session_object {
    uint64_t size;              /*  0 */
    uint32_t first_chunk;       /*  8 global index of its first chunk */
    uint32_t n_chunks;          /* 12 */
    uint32_t name_offset;       /* 16 relative path below MODEL_DIR, from names_offset */
    uint32_t name_len;          /* 20 */
    int32_t error;              /* 24 0, or the errno readers get (EIO, EACCES, ENOENT) */
    uint32_t chunks_ready;      /* 28 */
} ossc_session_object;          /* 32 */

#endif
