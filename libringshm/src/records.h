/* Records in the data area: an 8-byte header (length, kind) and the
 * payload, 8-aligned (docs/FORMAT.md, "Data area and records").  A record
 * never straddles the end of the data area: one that would is preceded by
 * a PADDING record to the end.  Reading a record back, with every field
 * checked against the capacity and the published head, is get.c's. */
#ifndef RINGSHM_RECORDS_H
#define RINGSHM_RECORDS_H

#include <stdint.h>

#include "layout.h"

/* Bytes a record of `payload` bytes occupies: header + payload, 8-aligned. */
static inline uint64_t rs__record_span(uint64_t payload) {
    return (RS_RECORD_HEADER + payload + 7) & ~(uint64_t)7;
}

/* Write a record header at `at` (an offset into the data area). */
static inline char *rs__write_record(char *data, uint64_t offset, uint64_t length,
                                     uint32_t kind) {
    rs_record *rec = (rs_record *)(data + offset);
    rec->length = (uint32_t)length;
    rec->kind = kind;
    return (char *)rec + RS_RECORD_HEADER;
}

#endif
