/* crc64.c: CRC-64/XZ (ECMA-182 polynomial, reflected, init and xorout ~0), the checksum OSS
 * sends as x-oss-hash-crc64ecma. Slicing-by-8 tables; combine() merges the CRCs of adjacent
 * ranges (zlib's crc32_combine, in GF(2) for this polynomial). */
#include <pthread.h>
#include <string.h>

#include "internal.h"

#define POLY 0xC96C5795D7870F42ULL /* 0x42F0E1EBA9EA3693 reflected */

static uint64_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void build_tables(void)
{
    for (int n = 0; n < 256; n++) {
        uint64_t crc = (uint64_t)n;
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ POLY : crc >> 1;
        table[0][n] = crc;
    }
    for (int n = 0; n < 256; n++)
        for (int k = 1; k < 8; k++)
            table[k][n] = (table[k - 1][n] >> 8) ^ table[0][table[k - 1][n] & 0xff];
}

OSSC_API uint64_t ossc_crc64(uint64_t crc, const void *data, size_t len)
{
    pthread_once(&table_once, build_tables);
    const unsigned char *p = data;
    crc = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        len--;
    }
    while (len >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        crc ^= word; /* little-endian: byte 0 is the low byte */
        crc = table[7][crc & 0xff] ^ table[6][(crc >> 8) & 0xff] ^
              table[5][(crc >> 16) & 0xff] ^ table[4][(crc >> 24) & 0xff] ^
              table[3][(crc >> 32) & 0xff] ^ table[2][(crc >> 40) & 0xff] ^
              table[1][(crc >> 48) & 0xff] ^ table[0][crc >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static uint64_t gf2_times(const uint64_t *mat, uint64_t vec)
{
    uint64_t sum = 0;
    for (; vec; vec >>= 1, mat++)
        if (vec & 1)
            sum ^= *mat;
    return sum;
}

static void gf2_square(uint64_t *square, const uint64_t *mat)
{
    for (int n = 0; n < 64; n++)
        square[n] = gf2_times(mat, mat[n]);
}

OSSC_API uint64_t ossc_crc64_combine(uint64_t crc1, uint64_t crc2, uint64_t len2)
{
    if (len2 == 0)
        return crc1;
    uint64_t even[64], odd[64];
    odd[0] = POLY; /* the operator for one zero bit */
    uint64_t row = 1;
    for (int n = 1; n < 64; n++) {
        odd[n] = row;
        row <<= 1;
    }
    gf2_square(even, odd); /* two zero bits */
    gf2_square(odd, even); /* four */
    do {
        gf2_square(even, odd);
        if (len2 & 1)
            crc1 = gf2_times(even, crc1);
        len2 >>= 1;
        if (!len2)
            break;
        gf2_square(odd, even);
        if (len2 & 1)
            crc1 = gf2_times(odd, crc1);
        len2 >>= 1;
    } while (len2);
    return crc1 ^ crc2;
}
