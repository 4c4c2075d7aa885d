/* control_image.h: a valid control file built in memory the way the owner's publish() lays it
 * out (objects at the header size rounded up to 64, the ready bits right after them, the
 * names after the bits), for test_session_check and the seeds of fuzz_control. */
#ifndef OSSC_CONTROL_IMAGE_H
#define OSSC_CONTROL_IMAGE_H

#include <stdio.h>
#include <string.h>

#include "session_layout.h"

#define CONTROL_IMAGE_CHUNK 4096

/* Three objects of different sizes (4, 2 and 1 chunks) with nested names. */
static const struct {
    const char *name;
    uint64_t size;
} control_image_objects[] = {
    {"model-00001-of-00002.safetensors", 3 * CONTROL_IMAGE_CHUNK + 1},
    {"sub/dir/weights.bin", 2 * CONTROL_IMAGE_CHUNK},
    {"tokenizer/a/b.json", 10},
};

/* Writes the image of the first n of control_image_objects into buf (8-byte aligned, cap
 * bytes); returns its size, or 0 when cap is too small. */
static size_t control_image_build(void *buf, size_t cap, uint32_t n)
{
    const uint64_t chunk = CONTROL_IMAGE_CHUNK;
    uint32_t n_chunks = 0;
    size_t names = 0;
    for (uint32_t i = 0; i < n; i++) {
        n_chunks += (uint32_t)((control_image_objects[i].size + chunk - 1) / chunk);
        names += strlen(control_image_objects[i].name) + 1;
    }
    size_t objects_off = (sizeof(ossc_session_header) + 63) & ~(size_t)63;
    size_t bits_off = objects_off + n * sizeof(ossc_session_object);
    size_t names_off = bits_off + ((n_chunks + 63) / 64) * 8;
    size_t size = names_off + names;
    if (size > cap)
        return 0;
    memset(buf, 0, size);
    ossc_session_header *h = buf;
    h->magic = OSSC_SESSION_MAGIC;
    h->version = OSSC_SESSION_VERSION;
    h->header_size = sizeof(*h);
    h->state = OSSC_SESSION_FETCHING;
    h->owner_pid = 4242;
    h->n_objects = n;
    h->n_chunks = n_chunks;
    h->chunk_size = chunk;
    h->objects_offset = objects_off;
    h->bits_offset = bits_off;
    h->names_offset = names_off;
    h->control_size = size;
    h->current_object = -1;
    snprintf(h->model_dir, sizeof(h->model_dir), "/models/m");
    snprintf(h->data_dir, sizeof(h->data_dir), "/dev/shm/ossc-1000-0123456789abcdef/data");
    snprintf(h->oss_path, sizeof(h->oss_path), "oss://bucket/models/m/");

    ossc_session_object *objs = (ossc_session_object *)((char *)buf + objects_off);
    char *area = (char *)buf + names_off;
    uint32_t name_pos = 0, next_chunk = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t osize = control_image_objects[i].size;
        uint32_t len = (uint32_t)strlen(control_image_objects[i].name);
        memcpy(area + name_pos, control_image_objects[i].name, len + 1);
        objs[i] = (ossc_session_object){osize, next_chunk,
                                        (uint32_t)((osize + chunk - 1) / chunk), name_pos, len,
                                        0, 0, 0};
        next_chunk += objs[i].n_chunks;
        name_pos += len + 1;
    }
    return size;
}

#endif
