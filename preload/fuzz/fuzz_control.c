/* fuzz_control.c: libFuzzer target for ossc_session_check. Arbitrary bytes stand for a mapped
 * control file; whatever the check accepts is then walked the way a reader walks it (the
 * header's strings, every object's name, a name table like the shim's, the ready bits of
 * every chunk of every object), so ASan reports any access the check should have refused.
 * Seeds: control_seed writes valid images (scripts/fuzz_listing.sh). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session_check.h"

static volatile uint64_t sink; /* keeps the reads */

static uint32_t hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void walk(const ossc_session_header *h)
{
    const ossc_session_object *objs =
        (const ossc_session_object *)((const char *)h + h->objects_offset);
    const uint64_t *bits = (const uint64_t *)((const char *)h + h->bits_offset);
    const char *names = (const char *)h + h->names_offset;
    sink += strlen(h->model_dir) + strlen(h->log_path) + strlen(h->audit_path) +
            strlen(h->data_dir) + strlen(h->oss_path);

    uint32_t n = 16;
    while (n < 2 * h->n_objects)
        n *= 2;
    uint32_t *slots = calloc(n, sizeof(*slots));
    if (!slots)
        return;
    for (uint32_t i = 0; i < h->n_objects; i++) {
        const ossc_session_object *o = &objs[i];
        const char *name = names + o->name_offset;
        if (strlen(name) != o->name_len || name[0] == '/' || strstr(name, "//"))
            __builtin_trap();
        char path[OSSC_MODEL_DIR_MAX + 1100];
        snprintf(path, sizeof(path), "%s/%s", h->model_dir, name);
        snprintf(path, sizeof(path), "%s/%u", h->data_dir, i);
        uint32_t k = hash(name, o->name_len) & (n - 1);
        while (slots[k])
            k = (k + 1) & (n - 1);
        slots[k] = i + 1;
        /* Every chunk a read of the object can ask for, as wait_range computes it. */
        for (uint64_t c = 0; c < o->n_chunks; c++) {
            uint64_t off = c * h->chunk_size;
            if (off >= o->size)
                __builtin_trap();
            uint64_t chunk = o->first_chunk + off / h->chunk_size;
            if (chunk >= h->n_chunks || chunk >= (uint64_t)o->first_chunk + o->n_chunks)
                __builtin_trap();
            sink += bits[chunk / 64] >> (chunk % 64) & 1;
        }
        if (o->size) {
            uint64_t last = o->first_chunk + (o->size - 1) / h->chunk_size;
            sink += bits[last / 64];
        }
    }
    /* Every name is found again, and finds its own object. */
    for (uint32_t i = 0; i < h->n_objects; i++) {
        const char *name = names + objs[i].name_offset;
        uint32_t k = hash(name, objs[i].name_len) & (n - 1), found = 0;
        for (; slots[k]; k = (k + 1) & (n - 1)) {
            const ossc_session_object *o = &objs[slots[k] - 1];
            if (o->name_len == objs[i].name_len &&
                memcmp(names + o->name_offset, name, o->name_len) == 0) {
                found = slots[k];
                break;
            }
        }
        if (!found)
            __builtin_trap();
    }
    free(slots);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exactly size bytes (malloc aligns to 16), so ASan sees the first byte past the file. */
    void *map = malloc(size ? size : 1);
    if (!map)
        return 0;
    memcpy(map, data, size);
    if (ossc_session_check(map, size) == NULL)
        walk(map);
    free(map);
    return 0;
}
