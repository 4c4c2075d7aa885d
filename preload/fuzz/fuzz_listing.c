/* fuzz_listing.c: libFuzzer target for the parsers of server replies (ListObjectsV2 pages and
 * <Error> bodies). Anything the network sends must parse or fail cleanly, never crash. */
#include <stdint.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    list_page page;
    ossc_error err;
    if (xml_parse_list_page((const char *)data, size, &page, &err) == 0) {
        for (size_t i = 0; i < page.count; i++)
            if (!page.objects[i].key)
                __builtin_trap();
        list_page_free(&page);
    }
    char code[64], msg[256];
    xml_parse_error((const char *)data, size, code, sizeof(code), msg, sizeof(msg));
    return 0;
}
