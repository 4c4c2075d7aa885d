/* session_check.h: whether a mapped control file (session_layout.h) can be trusted before
 * anything follows an offset in it. Every process with the shim maps the file the owner
 * published; a crafted or truncated one is refused whole, before the first object, name or
 * ready bit is read through it.
 *
 * ossc_session_check(map, size) returns NULL when the structure holds, else a short static
 * reason. It checks the header (magic, version, sizes, state, terminated strings), that the
 * object table, the ready bits and the names lie inside the file in that order, that the
 * objects' chunk ranges follow one another and add up to n_chunks, and that every name is a
 * NUL-terminated safe relative path inside the names area. Names must come in object order
 * without overlapping (as the owner writes them): the check stays linear in the file's size.
 *
 * The owner writes the structure once, before it publishes the file; what it changes later
 * (state, an object's error, ready bits, progress) a reader reads again on every use.
 * map must be 8-byte aligned (a mapping is). Plain C, no libc: the shim includes it.
 */
#ifndef OSSC_SESSION_CHECK_H
#define OSSC_SESSION_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "session_layout.h"

#define OSSC_SESSION_ERRNO_MAX 4096 /* an object's error is 0 or an errno below this */

static inline int ossc_session_terminated_(const char *s, uint64_t cap)
{
    for (uint64_t i = 0; i < cap; i++)
        if (s[i] == '\0')
            return 1;
    return 0;
}

/* len bytes without a NUL, no leading '/', no empty, "." or ".." segment. */
static inline int ossc_session_relative_(const char *s, uint32_t len)
{
    uint32_t seg = 0; /* where the current segment starts */
    for (uint32_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '/') {
            if (s[i] == '\0')
                return 0;
            continue;
        }
        uint32_t n = i - seg;
        if (n == 0 || (n == 1 && s[seg] == '.') ||
            (n == 2 && s[seg] == '.' && s[seg + 1] == '.'))
            return 0;
        seg = i + 1;
    }
    return 1;
}

/* Whether a session directory or file (its owner uid, group gid and mode, as fstat gave them
 * for what was opened) may be used by a process of euid. Private (group OSSC_SESSION_PRIVATE):
 * its own, closed to everyone else. Shared with group: of that group, and nobody but its owner
 * can write it or anyone outside the group open it; another member's is used read-only.
 * OSSC_SESSION_OWN_ANY: its own, private or shared. NULL when it may, else why not. */
static inline const char *ossc_session_access(uint32_t uid, uint32_t gid, uint32_t mode,
                                              uint32_t euid, long group)
{
    if (group >= 0 && gid != (uint64_t)group)
        return "it is not of the sharedGroup";
    if (group < 0 && uid != euid)
        return "another user owns it";
    if (group == OSSC_SESSION_PRIVATE && (mode & 077))
        return "other users can open it";
    if (mode & 027)
        return "users outside its group can open it, or its group can write it";
    return NULL;
}

/* NULL when the control file mapped at map can be trusted; size is the file's size as fstat
 * gives it (never the header's control_size). Else why not, a static string. */
static inline const char *ossc_session_check(const void *map, uint64_t size)
{
    const ossc_session_header *h = (const ossc_session_header *)map;
    if (size < sizeof(*h))
        return "the file is shorter than the header";
    if (h->magic != OSSC_SESSION_MAGIC)
        return "not a control file (bad magic)";
    if (h->version != OSSC_SESSION_VERSION)
        return "another layout version";
    if (h->header_size != sizeof(*h))
        return "header_size is not this version's";
    if (h->control_size != size)
        return "control_size is not the file's size";
    if (h->state > OSSC_SESSION_ENDED)
        return "unknown state";
    if (h->chunk_size == 0)
        return "chunk_size is 0";
    if (!ossc_session_terminated_(h->model_dir, sizeof(h->model_dir)))
        return "model_dir is not terminated";
    if (h->model_dir[0] != '/')
        return "model_dir is not absolute";
    if (!ossc_session_terminated_(h->log_path, sizeof(h->log_path)))
        return "log_path is not terminated";
    if (!ossc_session_terminated_(h->audit_path, sizeof(h->audit_path)))
        return "audit_path is not terminated";
    if (!ossc_session_terminated_(h->data_dir, sizeof(h->data_dir)))
        return "data_dir is not terminated";
    if (!ossc_session_terminated_(h->oss_path, sizeof(h->oss_path)))
        return "oss_path is not terminated";

    /* header <= objects <= bits <= names <= size, each difference large enough. */
    const uint64_t objs = h->objects_offset, bits = h->bits_offset, names = h->names_offset;
    if (objs < sizeof(*h))
        return "the object table overlaps the header";
    if (objs % 8)
        return "the object table is not 8-byte aligned";
    if (bits % 8)
        return "the ready bits are not 8-byte aligned";
    if (names > size)
        return "the names start past the end of the file";
    if (bits > names)
        return "the ready bits start after the names";
    if (objs > bits)
        return "the object table starts after the ready bits";
    if ((uint64_t)h->n_objects * sizeof(ossc_session_object) > bits - objs)
        return "the object table runs into the ready bits";
    if (((uint64_t)h->n_chunks + 63) / 64 * 8 > names - bits)
        return "the ready bits run into the names";

    const ossc_session_object *o =
        (const ossc_session_object *)((const char *)map + objs);
    const char *area = (const char *)map + names;
    const uint64_t area_size = size - names;
    uint64_t next_chunk = 0, name_end = 0;
    for (uint32_t i = 0; i < h->n_objects; i++, o++) {
        uint64_t n_chunks = o->size / h->chunk_size + (o->size % h->chunk_size != 0);
        if (o->n_chunks != n_chunks)
            return "an object's n_chunks does not match its size";
        if (o->first_chunk != next_chunk)
            return "an object's chunks do not follow the previous object's";
        next_chunk += o->n_chunks;
        if (next_chunk > h->n_chunks)
            return "the objects hold more chunks than the header's n_chunks";
        if (o->error < 0 || o->error >= OSSC_SESSION_ERRNO_MAX)
            return "an object's error is not an errno";
        if (o->name_len == 0)
            return "an object's name is empty";
        if (o->name_offset < name_end)
            return "an object's name overlaps the one before";
        if ((uint64_t)o->name_offset + o->name_len + 1 > area_size)
            return "an object's name runs past the file";
        const char *name = area + o->name_offset;
        if (name[o->name_len] != '\0')
            return "an object's name does not end at name_len";
        if (!ossc_session_relative_(name, o->name_len))
            return "an object's name is not a safe relative path";
        name_end = (uint64_t)o->name_offset + o->name_len + 1;
    }
    if (next_chunk != h->n_chunks)
        return "the objects' chunks do not add up to the header's n_chunks";
    return NULL;
}

#endif
