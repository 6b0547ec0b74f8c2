/* RECSTREAM.WRITE2 <payload>: one batch of the interaction processor, written natively.
 *
 * The payload and its effects are exactly those of the Lua write script in
 * recstream/stores/session_store.py (_WRITE_BATCH_LUA), which stays the path for a Redis
 * without this module. Profiled on the ingest bench, a third of Redis's time in that script was
 * the Lua interpreter (unpacking the payload into tables, argument conversion) and another tenth
 * formatting and parsing scores as text: here the payload is read in place and scores stay
 * doubles.
 *
 * The 2 is the payload's version: a Redis still running an older build of this module does
 * not know the command, and the store then writes with the script instead of sending a payload
 * the old build would refuse. RECSTREAM.WRITE (version 1: the first seven sections) stays, so
 * that an AOF written by the older build still loads.
 *
 * Payload (msgpack, raw strings), eight sections in order:
 *   rebase     [[key, factor], ...]                   ZUNIONSTORE key 1 key WEIGHTS factor
 *   states     [[key, field, value, ...], ...]        HSET
 *   seen       [[key, keep, above, members, scores]]  ZADD GT, then trim
 *   increments [[key, keep, above, members, incs]]    ZINCRBY each, then trim
 *   sets       [[key, member, ...], ...]              SADD
 *   landmark   [key, value]                           SET
 *   guards     [[key, floor, ids, times], ...]        ZADD, then ZREMRANGEBYSCORE -inf (floor
 *   expire     [ttl_ms, [key, ...]]                   PEXPIRE key ttl_ms (keys that exist)
 * trim: a sorted set holding more than `above` members (above > 0) is cut to its top `keep`.
 *
 * The whole payload is checked before anything is written, the types of the keys it writes
 * included, so a malformed payload or a key of another type changes nothing.
 * The command is replicated (and appended to the AOF) verbatim: replaying it is deterministic.
 */
#include <stdint.h>
#include <string.h>

#include "redismodule.h"

typedef struct {
    const unsigned char *at, *end;
} Reader;

typedef struct {
    RedisModuleCtx *ctx;
    int apply; /* 0: only check the payload's shape */
    const char *error;
    long long states; /* states written: the reply */
} Run;

static int need(const Reader *r, size_t n) { return (size_t)(r->end - r->at) >= n; }

static uint64_t big_endian(const unsigned char *p, int n) {
    uint64_t value = 0;
    for (int i = 0; i < n; i++) value = (value << 8) | p[i];
    return value;
}

static int read_array(Reader *r, uint32_t *count) {
    if (!need(r, 1)) return 0;
    unsigned char tag = *r->at;
    if ((tag & 0xf0) == 0x90) {
        *count = tag & 0x0f;
        r->at += 1;
    } else if (tag == 0xdc && need(r, 3)) {
        *count = (uint32_t)big_endian(r->at + 1, 2);
        r->at += 3;
    } else if (tag == 0xdd && need(r, 5)) {
        *count = (uint32_t)big_endian(r->at + 1, 4);
        r->at += 5;
    } else {
        return 0;
    }
    return 1;
}

static int read_string(Reader *r, const char **text, size_t *length) {
    if (!need(r, 1)) return 0;
    unsigned char tag = *r->at;
    size_t head, size;
    if ((tag & 0xe0) == 0xa0) {
        head = 1, size = tag & 0x1f;
    } else if ((tag == 0xd9 || tag == 0xc4) && need(r, 2)) {
        head = 2, size = r->at[1];
    } else if ((tag == 0xda || tag == 0xc5) && need(r, 3)) {
        head = 3, size = big_endian(r->at + 1, 2);
    } else if ((tag == 0xdb || tag == 0xc6) && need(r, 5)) {
        head = 5, size = big_endian(r->at + 1, 4);
    } else {
        return 0;
    }
    if (!need(r, head + size)) return 0;
    *text = (const char *)r->at + head;
    *length = size;
    r->at += head + size;
    return 1;
}

static int read_number(Reader *r, double *value) {
    if (!need(r, 1)) return 0;
    unsigned char tag = *r->at;
    const unsigned char *p = r->at + 1;
    int size;
    if (tag <= 0x7f || tag >= 0xe0) { /* positive and negative fixint */
        *value = tag <= 0x7f ? (double)tag : (double)(int8_t)tag;
        r->at += 1;
        return 1;
    }
    switch (tag) {
        case 0xcc: case 0xd0: size = 1; break;
        case 0xcd: case 0xd1: size = 2; break;
        case 0xce: case 0xd2: case 0xca: size = 4; break;
        case 0xcf: case 0xd3: case 0xcb: size = 8; break;
        default: return 0;
    }
    if (!need(r, 1 + (size_t)size)) return 0;
    uint64_t bits = big_endian(p, size);
    if (tag == 0xca) {
        uint32_t narrow = (uint32_t)bits;
        float f;
        memcpy(&f, &narrow, 4);
        *value = f;
    } else if (tag == 0xcb) {
        memcpy(value, &bits, 8);
    } else if (tag >= 0xd0) { /* signed: sign-extend from `size` bytes */
        int shift = 64 - 8 * size;
        *value = (double)((int64_t)(bits << shift) >> shift);
    } else {
        *value = (double)bits;
    }
    r->at += 1 + size;
    return 1;
}

static int fail(Run *run, const char *error) {
    if (!run->error) run->error = error;
    return 0;
}

static RedisModuleString *text(Run *run, const char *at, size_t length) {
    return RedisModule_CreateString(run->ctx, at, length);
}

static RedisModuleKey *open_key(Run *run, const char *name, size_t length, int type) {
    RedisModuleString *key_name = text(run, name, length);
    RedisModuleKey *key = RedisModule_OpenKey(run->ctx, key_name, REDISMODULE_READ | REDISMODULE_WRITE);
    RedisModule_FreeString(run->ctx, key_name);
    int found = RedisModule_KeyType(key);
    if (found != REDISMODULE_KEYTYPE_EMPTY && found != type) {
        RedisModule_CloseKey(key);
        fail(run, "WRONGTYPE a recstream key holds another type of value");
        return NULL;
    }
    return key;
}

/* In the check pass: a key the payload writes must be absent or of the type it writes. */
static int key_has_type(Run *run, const char *name, size_t length, int type) {
    RedisModuleString *key_name = text(run, name, length);
    RedisModuleKey *key = RedisModule_OpenKey(run->ctx, key_name, REDISMODULE_READ);
    RedisModule_FreeString(run->ctx, key_name);
    int found = key ? RedisModule_KeyType(key) : REDISMODULE_KEYTYPE_EMPTY;
    if (key) RedisModule_CloseKey(key);
    return found == REDISMODULE_KEYTYPE_EMPTY || found == type
               ? 1 : fail(run, "WRONGTYPE a recstream key holds another type of value");
}

/* The key of a record: in the check pass its type is checked, in the write pass it is opened. */
static int typed_key(Run *run, const char *name, size_t length, int type, RedisModuleKey **key) {
    if (!run->apply) return key_has_type(run, name, length, type);
    return (*key = open_key(run, name, length, type)) != NULL;
}

/* A reply of RedisModule_Call (the rare and range operations go through Redis's own commands). */
static int called(Run *run, RedisModuleCallReply *reply) {
    int ok = reply != NULL && RedisModule_CallReplyType(reply) != REDISMODULE_REPLY_ERROR;
    if (reply != NULL) RedisModule_FreeCallReply(reply);
    return ok ? 1 : fail(run, "ERR recstream.write: a command in the batch failed");
}

typedef int (*PairWrite)(Run *, RedisModuleKey *, RedisModuleString *, double);

static int add_greater(Run *run, RedisModuleKey *key, RedisModuleString *member, double score) {
    double current;
    if (RedisModule_ZsetScore(key, member, &current) == REDISMODULE_OK && !(score > current))
        return 1;
    int flags = 0;
    return RedisModule_ZsetAdd(key, score, member, &flags) == REDISMODULE_OK
               ? 1 : fail(run, "ERR recstream.write: ZADD failed");
}

static int add(Run *run, RedisModuleKey *key, RedisModuleString *member, double score) {
    int flags = 0;
    return RedisModule_ZsetAdd(key, score, member, &flags) == REDISMODULE_OK
               ? 1 : fail(run, "ERR recstream.write: ZADD failed");
}

static int increment(Run *run, RedisModuleKey *key, RedisModuleString *member, double by) {
    int flags = 0;
    double score;
    return RedisModule_ZsetIncrby(key, by, member, &flags, &score) == REDISMODULE_OK
               ? 1 : fail(run, "ERR recstream.write: ZINCRBY failed (not a number?)");
}

/* Two columns, [member, ...] and [number, ...], of one length; written pair by pair. */
static int columns(Run *run, Reader *r, RedisModuleKey *key, PairWrite write) {
    uint32_t members, numbers;
    const char *at;
    size_t length;
    double number;
    if (!read_array(r, &members)) return fail(run, "ERR recstream.write: members expected");
    Reader member_at = *r;
    for (uint32_t i = 0; i < members; i++)
        if (!read_string(r, &at, &length)) return fail(run, "ERR recstream.write: bad member");
    if (!read_array(r, &numbers) || numbers != members)
        return fail(run, "ERR recstream.write: members and scores differ in length");
    Reader number_at = *r;
    for (uint32_t i = 0; i < numbers; i++) /* NaN would fail in Redis part-way: refuse it here */
        if (!read_number(r, &number) || number != number)
            return fail(run, "ERR recstream.write: bad score");
    if (!run->apply) return 1;
    for (uint32_t i = 0; i < members; i++) {
        read_string(&member_at, &at, &length);
        read_number(&number_at, &number);
        RedisModuleString *member = text(run, at, length);
        int ok = write(run, key, member, number);
        RedisModule_FreeString(run->ctx, member);
        if (!ok) return 0;
    }
    return 1;
}

static int read_key(Run *run, Reader *r, const char **name, size_t *length) {
    return read_string(r, name, length) && *length > 0
               ? 1 : fail(run, "ERR recstream.write: key expected");
}

/* [key, keep, above, members, numbers]: written, then cut to the top `keep` if over `above`. */
static int sorted_set(Run *run, Reader *r, PairWrite write) {
    uint32_t size;
    const char *name;
    size_t length;
    double keep, above;
    if (!read_array(r, &size) || size != 5 || !read_key(run, r, &name, &length) ||
        !read_number(r, &keep) || !read_number(r, &above))
        return fail(run, "ERR recstream.write: [key, keep, above, members, scores] expected");
    RedisModuleKey *key = NULL;
    if (!typed_key(run, name, length, REDISMODULE_KEYTYPE_ZSET, &key)) return 0;
    int ok = columns(run, r, key, write);
    if (!run->apply) return ok;
    long long members = (long long)RedisModule_ValueLength(key);
    RedisModule_CloseKey(key);
    if (!ok || above <= 0 || members <= (long long)above) return ok;
    return called(run, RedisModule_Call(run->ctx, "ZREMRANGEBYRANK", "bll", name, length,
                                        (long long)0, -((long long)keep + 1)));
}

/* [key, floor, event ids, times]: the ids added, every id older than floor removed. */
static int guards(Run *run, Reader *r) {
    uint32_t size;
    const char *name, *floor;
    size_t length, floor_length;
    char below[72] = "(";
    if (!read_array(r, &size) || size != 4 || !read_key(run, r, &name, &length) ||
        !read_string(r, &floor, &floor_length) || floor_length == 0 ||
        floor_length >= sizeof(below) - 1)
        return fail(run, "ERR recstream.write: [key, floor, ids, times] expected");
    RedisModuleKey *key = NULL;
    if (!typed_key(run, name, length, REDISMODULE_KEYTYPE_ZSET, &key)) return 0;
    int ok = columns(run, r, key, add);
    if (!run->apply) return ok;
    RedisModule_CloseKey(key);
    memcpy(below + 1, floor, floor_length);
    return ok && called(run, RedisModule_Call(run->ctx, "ZREMRANGEBYSCORE", "bcc", name, length,
                                              "-inf", below));
}

/* [key, field, value, ...] -> HSET. */
static int state(Run *run, Reader *r) {
    uint32_t size;
    const char *name, *field, *value;
    size_t length, field_length, value_length;
    char field_name[64];
    if (!read_array(r, &size) || size < 3 || size % 2 == 0 || !read_key(run, r, &name, &length))
        return fail(run, "ERR recstream.write: [key, field, value, ...] expected");
    RedisModuleKey *key = NULL;
    if (!typed_key(run, name, length, REDISMODULE_KEYTYPE_HASH, &key)) return 0;
    for (uint32_t i = 1; i < size; i += 2) {
        if (!read_string(r, &field, &field_length) || field_length >= sizeof(field_name) ||
            !read_string(r, &value, &value_length)) {
            if (key) RedisModule_CloseKey(key);
            return fail(run, "ERR recstream.write: bad state field");
        }
        if (!run->apply) continue;
        memcpy(field_name, field, field_length);
        field_name[field_length] = '\0';
        RedisModuleString *stored = text(run, value, value_length);
        RedisModule_HashSet(key, REDISMODULE_HASH_CFIELDS, field_name, stored, NULL);
        RedisModule_FreeString(run->ctx, stored);
    }
    if (key) RedisModule_CloseKey(key);
    run->states += run->apply;
    return 1;
}

/* A [key, text] record. */
static int key_and_text(Run *run, Reader *r, const char **name, size_t *length,
                        const char **value, size_t *value_length) {
    uint32_t size;
    return read_array(r, &size) && size == 2 && read_key(run, r, name, length) &&
           read_string(r, value, value_length);
}

/* [key, factor] -> ZUNIONSTORE key 1 key WEIGHTS factor. */
static int rebase(Run *run, Reader *r) {
    const char *name, *factor;
    size_t length, factor_length;
    if (!key_and_text(run, r, &name, &length, &factor, &factor_length))
        return fail(run, "ERR recstream.write: [key, factor] expected");
    if (!run->apply) return key_has_type(run, name, length, REDISMODULE_KEYTYPE_ZSET);
    return called(run, RedisModule_Call(run->ctx, "ZUNIONSTORE", "bcbcb", name, length, "1", name,
                                        length, "WEIGHTS", factor, factor_length));
}

/* [key, member, ...] -> SADD. */
static int set_members(Run *run, Reader *r) {
    uint32_t size;
    const char *name, *member;
    size_t length, member_length;
    if (!read_array(r, &size) || size < 2 || !read_key(run, r, &name, &length))
        return fail(run, "ERR recstream.write: [key, member, ...] expected");
    if (!run->apply && !key_has_type(run, name, length, REDISMODULE_KEYTYPE_SET)) return 0;
    for (uint32_t i = 1; i < size; i++) {
        if (!read_string(r, &member, &member_length))
            return fail(run, "ERR recstream.write: bad set member");
        if (run->apply && !called(run, RedisModule_Call(run->ctx, "SADD", "bb", name, length,
                                                        member, member_length)))
            return 0;
    }
    return 1;
}

/* [key, value] -> SET. */
static int landmark(Run *run, Reader *r) {
    const char *name, *value;
    size_t length, value_length;
    if (!key_and_text(run, r, &name, &length, &value, &value_length))
        return fail(run, "ERR recstream.write: [key, value] expected");
    if (!run->apply) return 1;
    return called(run, RedisModule_Call(run->ctx, "SET", "bb", name, length, value, value_length));
}

/* [ttl_ms, [key, ...]] -> PEXPIRE each key that exists (ttl_ms 0: no keys are sent). */
static int expire(Run *run, Reader *r) {
    uint32_t size, keys;
    double ttl;
    const char *name;
    size_t length;
    if (!read_array(r, &size) || size != 2 || !read_number(r, &ttl) || ttl < 0 ||
        !read_array(r, &keys))
        return fail(run, "ERR recstream.write: [ttl_ms, [key, ...]] expected");
    for (uint32_t i = 0; i < keys; i++) {
        if (!read_key(run, r, &name, &length)) return 0;
        if (!run->apply || ttl <= 0) continue;
        RedisModuleString *key_name = text(run, name, length);
        RedisModuleKey *key = RedisModule_OpenKey(run->ctx, key_name, REDISMODULE_WRITE);
        RedisModule_FreeString(run->ctx, key_name);
        if (RedisModule_KeyType(key) != REDISMODULE_KEYTYPE_EMPTY)
            RedisModule_SetExpire(key, (mstime_t)ttl);
        RedisModule_CloseKey(key);
    }
    return 1;
}

typedef int (*RecordWrite)(Run *, Reader *);

static int seen_record(Run *run, Reader *r) { return sorted_set(run, r, add_greater); }
static int increment_record(Run *run, Reader *r) { return sorted_set(run, r, increment); }

static int records(Run *run, Reader *r, RecordWrite write) {
    uint32_t count;
    if (!read_array(r, &count)) return fail(run, "ERR recstream.write: a section must be a list");
    for (uint32_t i = 0; i < count; i++)
        if (!write(run, r)) return 0;
    return 1;
}

/* version 1: seven sections (no expire); version 2: eight. */
static int run_payload(Run *run, const char *payload, size_t length, int version) {
    Reader r = {(const unsigned char *)payload, (const unsigned char *)payload + length};
    uint32_t sections;
    if (!read_array(&r, &sections) || sections != (version == 1 ? 7u : 8u))
        return fail(run, "ERR recstream.write: a payload has 7 sections (v1) or 8 (v2)");
    int ok = records(run, &r, rebase) && records(run, &r, state) &&
             records(run, &r, seen_record) && records(run, &r, increment_record) &&
             records(run, &r, set_members) && landmark(run, &r) && records(run, &r, guards) &&
             (version == 1 || expire(run, &r));
    if (ok && r.at != r.end) return fail(run, "ERR recstream.write: bytes after the payload");
    return ok;
}

static int write_version(RedisModuleCtx *ctx, RedisModuleString **argv, int argc, int version) {
    if (argc != 2) return RedisModule_WrongArity(ctx);
    size_t length;
    const char *payload = RedisModule_StringPtrLen(argv[1], &length);
    Run check = {ctx, 0, NULL, 0};
    if (!run_payload(&check, payload, length, version))
        return RedisModule_ReplyWithError(ctx, check.error);
    Run write = {ctx, 1, NULL, 0};
    int ok = run_payload(&write, payload, length, version);
    /* Even after an error part-way (not expected: shapes and key types were checked first),
     * replaying the command stops at the same place, so the AOF and replicas end in the same
     * state as this server. */
    RedisModule_ReplicateVerbatim(ctx);
    if (!ok) return RedisModule_ReplyWithError(ctx, write.error);
    return RedisModule_ReplyWithLongLong(ctx, write.states);
}

static int write_v1(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    return write_version(ctx, argv, argc, 1);
}

static int write_v2(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    return write_version(ctx, argv, argc, 2);
}

int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    (void)argv;
    (void)argc;
    if (RedisModule_Init(ctx, "recstream", 2, REDISMODULE_APIVER_1) == REDISMODULE_ERR)
        return REDISMODULE_ERR;
    if (RedisModule_CreateCommand(ctx, "recstream.write", write_v1, "write deny-oom", 0, 0, 0) ==
        REDISMODULE_ERR)
        return REDISMODULE_ERR;
    return RedisModule_CreateCommand(ctx, "recstream.write2", write_v2, "write deny-oom", 0, 0, 0);
}
