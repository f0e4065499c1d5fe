/* The C tests' one assertion: print where and why, exit 1. */
#ifndef RINGSHM_TEST_CHECK_H
#define RINGSHM_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "ringshm.h"

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (detail: %s)\n", __FILE__,        \
                    __LINE__, #cond, rs_detail());                                    \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

#define CHECK_RC(call)                                                                \
    do {                                                                              \
        int check_rc_ = (call);                                                       \
        if (check_rc_ < 0) {                                                          \
            fprintf(stderr, "%s:%d: %s returned %d: %s (%s)\n", __FILE__, __LINE__,    \
                    #call, check_rc_, rs_strerror(check_rc_), rs_detail());           \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

#endif
