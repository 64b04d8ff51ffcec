/* rangesrc.h — a source whose byte ranges can be read on their own, from any thread: what lets the
 * restore engine's parallel loader fetch each COPY block of a dump that is not a local file (an S3
 * object, by Range requests) while the main thread reads the whole stream.
 *
 * A binding that offers one puts a light userdata pointing to its (static) pgr_range_source in its
 * objects' metatable under "__pgr_range"; ud is then the object's userdata block. The object must
 * stay alive (and its owner unchanged) while ranges are open. */
#ifndef PGR_RANGESRC_H
#define PGR_RANGESRC_H

#include <stddef.h>

#define PGR_RANGE_METAFIELD "__pgr_range"

struct pgr_range_source {
    /* Bytes [start, end) of the source as a handle, or NULL with a message in err. */
    void *(*open)(void *ud, long long start, long long end, char *err, size_t errcap);
    /* > 0 bytes, 0 at the end of the range (its size checked), -1 with a message in err. */
    long (*read)(void *handle, char *buf, size_t cap, char *err, size_t errcap);
    void (*close)(void *handle);
};

#endif
