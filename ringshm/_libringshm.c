/* libringshm compiled into the extension as one unit, so that the hot path
 * (a put or get of a small message: lock, place or find, publish, wake)
 * inlines across the library's files as if they were one.  The library
 * itself, its header and its own build are in libringshm/. */
#include "backing.c"
#include "errors.c"
#include "get.c"
#include "lifecycle.c"
#include "liveness.c"
#include "locks.c"
#include "process.c"
#include "put.c"
#include "segment.c"
#include "subscription.c"
#include "topic.c"
#include "topic_read.c"
#include "waitmany.c"
#include "waits.c"
