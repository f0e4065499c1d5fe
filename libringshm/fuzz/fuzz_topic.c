/* libFuzzer: a live topic from the input (bodies.h). */
#include <stddef.h>
#include <stdint.h>

#include "bodies.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_topic_one(data, size);
    return 0;
}
