/* control_seed.c: writes the seeds of fuzz_control into a directory: valid control files of
 * 3, 1 and 0 objects, built as the owner lays them out (preload/tests/control_image.h).
 * Usage: control_seed DIR */
#include <stdio.h>

#include "control_image.h"
#include "session_check.h"

int main(int argc, char **argv)
{
    static uint64_t image[16384 / 8];
    if (argc != 2) {
        fprintf(stderr, "usage: control_seed DIR\n");
        return 2;
    }
    for (uint32_t n = 0; n <= 3; n += n ? 2 : 1) {
        size_t size = control_image_build(image, sizeof(image), n);
        const char *why = size ? ossc_session_check(image, size) : "too large";
        char path[4096];
        snprintf(path, sizeof(path), "%s/valid-%u-objects", argv[1], n);
        FILE *f = why ? NULL : fopen(path, "wb");
        if (!f || fwrite(image, 1, size, f) != size || fclose(f) != 0) {
            fprintf(stderr, "control_seed: cannot write %s: %s\n", path, why ? why : "I/O error");
            return 1;
        }
    }
    return 0;
}
