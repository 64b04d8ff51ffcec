/* rangesrc.h — a source whose byte ranges can be read on their own, from any thread: what lets the
 * restore engine's parallel loader fetch each COPY block of a dump that is not a local file (an S3
 * object, by Range requests) while the main thread reads the whole stream.
 *
 * A binding that offers one puts a light userdata pointing to its (static) pgr_range_source in its
 * objects' metatable under "__pgr_range"; ud is then the object's userdata block. The object must
 * stay alive (and its owner unchanged) while it is read from C: hold tells it when. */
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
    /* The object offset of the next byte the object's stream will deliver (what has been read of it
     * already), or -1 when its ranges cannot be fetched safely (no ETag to pin the object by, size
     * unknown). Called once, before the restore reads anything: its script offsets count from there. */
    long long (*base)(void *ud);
    /* held = 1 while a restore reads it from C (the object must refuse to be closed), 0 after. */
    void (*hold)(void *ud, int held);
    /* Bytes the object's own stream reads ahead of its consumer (0 when it does not). A restore
     * with jobs then feeds each COPY block to its connection from that one stream, within as many
     * bytes again, instead of fetching its range a second time. */
    long long (*readahead)(void *ud);
    /* The object's own stream, read from C on the calling thread as its Lua read method would
     * (without a Lua call and a Lua string per chunk): > 0, 0 at its end, -1 with a message. */
    long (*stream_read)(void *ud, char *buf, size_t cap, char *err, size_t errcap);
};

#endif
