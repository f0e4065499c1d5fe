/* The library's calls one by one on one ring: put/get, batches, spans,
 * errors, shutdown, stats.  Exits non-zero on the first failure. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ringshm.h"

int main(void) {
    rs_ring *r;
    char name[64], buf[4096];
    size_t len, lengths[16];
    struct iovec batch[3];
    rs_span span;
    struct rs_stats st;
    int rc, i;

    snprintf(name, sizeof(name), "ctest-basic-%d", (int)getpid());
    CHECK_RC(rs_create_name(name, 10000, NULL, &r));
    CHECK(rs_capacity(r) == 16384);
    CHECK(rs_max_message_size(r) == 8192 - 8);
    CHECK(rs_create_name(name, 10000, NULL, &(rs_ring *){0}) == RS_EXISTS);

    CHECK_RC(rs_put(r, "hello", 5, 0));
    CHECK_RC(rs_put(r, "", 0, 0));
    CHECK(rs_count(r) == 2);
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
    CHECK(len == 5 && memcmp(buf, "hello", 5) == 0);
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
    CHECK(len == 0);
    CHECK(rs_get(r, buf, sizeof(buf), &len, 0) == RS_EMPTY);
    CHECK(rs_get(r, buf, sizeof(buf), &len, 2000000) == RS_EMPTY);

    /* A buffer too small leaves the message. */
    CHECK_RC(rs_put(r, "abcdef", 6, 0));
    CHECK(rs_get(r, buf, 3, &len, 0) == RS_TOO_LARGE && len == 6);
    CHECK_RC(rs_get(r, buf, sizeof(buf), &len, 0));
    CHECK(len == 6);

    CHECK(rs_put(r, buf, 9000, 0) == RS_TOO_LARGE);
    CHECK(strstr(rs_detail(), "max_message_size") != NULL);

    batch[0].iov_base = "one"; batch[0].iov_len = 3;
    batch[1].iov_base = "two!"; batch[1].iov_len = 4;
    batch[2].iov_base = "three"; batch[2].iov_len = 5;
    CHECK_RC(rs_put_many(r, batch, 3, 0));
    rc = rs_get_many(r, buf, sizeof(buf), lengths, 16, 0);
    CHECK(rc == 3 && lengths[0] == 3 && lengths[1] == 4 && lengths[2] == 5);
    CHECK(memcmp(buf, "onetwo!three", 12) == 0);

    /* Spans: a cancelled reserve publishes nothing; a kept view stays. */
    CHECK_RC(rs_reserve(r, 4, &span, 0));
    memcpy(span.data, "zero", 4);
    CHECK_RC(rs_cancel(r, &span));
    CHECK(rs_count(r) == 0);
    CHECK_RC(rs_reserve(r, 4, &span, 0));
    CHECK(rs_put(r, "x", 1, 0) == RS_DEADLOCK);
    memcpy(span.data, "copy", 4);
    CHECK_RC(rs_commit(r, &span));
    CHECK_RC(rs_view(r, &span, 0));
    CHECK(span.len == 4 && memcmp(span.data, "copy", 4) == 0);
    CHECK(rs_get(r, buf, sizeof(buf), &len, 0) == RS_DEADLOCK);
    CHECK_RC(rs_keep(r, &span));
    CHECK_RC(rs_view(r, &span, 0));
    CHECK_RC(rs_release(r, &span));
    CHECK(rs_count(r) == 0);

    /* Many laps: padding is skipped, order kept. */
    for (i = 0; i < 5000; i++) {
        snprintf(buf, sizeof(buf), "message %d", i);
        CHECK_RC(rs_put(r, buf, 100 + (size_t)(i % 700), 0));
        CHECK_RC(rs_get(r, buf + 2048, 2048, &len, 0));
        CHECK(len == 100 + (size_t)(i % 700));
        CHECK(strncmp(buf + 2048, buf, 12) == 0);
    }
    /* Full. */
    for (i = 0; rs_put(r, buf, 1000, 0) == 0; i++) {
    }
    CHECK(i == 16384 / 1008);
    CHECK(rs_full(r) == 0);
    while (rs_put(r, buf, 1, 0) == 0)
        i++;
    CHECK(rs_full(r) == 1);
    CHECK(rs_put(r, buf, 1000, 1000000) == RS_FULL);

    CHECK_RC(rs_stats(r, &st));
    CHECK(st.messages == (uint64_t)i && st.put_timeouts >= 1 && st.creator_alive);
    CHECK(st.creator_pid == getpid());

    CHECK_RC(rs_shutdown(r, 0));
    CHECK(rs_put(r, "x", 1, 0) == RS_SHUTDOWN);
    while ((rc = rs_get(r, buf, sizeof(buf), &len, RS_FOREVER)) == 0)
        i--;
    CHECK(rc == RS_SHUTDOWN && i == 0);
    CHECK(strcmp(rs_strerror(RS_SHUTDOWN), "the ring was shut down") == 0);
    CHECK_RC(rs_close(r));
    CHECK(rs_open_name(name, NULL, &r) == RS_NOT_FOUND);
    CHECK(rs_create_name("a/b", 4096, NULL, &r) == RS_INVALID);
    printf("test_basic: ok\n");
    return 0;
}
