/* audit-verify on any file: the input is written as a file in a private folder (made once) and
 * gw_audit_verify reads it without a key, with an HMAC key, with --continue and an anchor, and
 * with --continue alone; gw_audit_open reads its last record as a restart would (repairing a
 * torn last line), and gw_audit_repair (audit-repair) runs on a fresh copy. When the input is a
 * JSON object, gw_audit_members turns it into record members. Checks: verify answers 0 or 1
 * for a readable file; what verifies also verifies with --continue, and a log that verifies
 * can be continued by gw_audit_open; a file open repaired, or audit-repair accepted, then
 * verifies with --continue; audit-repair refusing changes nothing; the members, put back in
 * braces, are the same object. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "config.h"
#include "json.h"

static const unsigned char key[32] = "0123456789abcdef0123456789abcdef";
static const char anchor_hash[] =
    "0000000000000000000000000000000000000000000000000000000000000000";

static char dir[64], path[128], torn[160];
static FILE *devnull;

/* gw_audit_verify on the input file: with the key or not, --continue or not, and an anchor
 * (SEQ:HASH, the only chain's) when aseq is not 0. */
static int verify(const unsigned char *k, size_t klen, uint64_t aseq, bool cont)
{
    const char *files[] = {path};
    struct gw_audit_anchor a = {.seq = aseq};
    memcpy(a.hash, anchor_hash, sizeof a.hash);
    struct gw_audit_verify_opts o = {
        .key = k, .keylen = klen, .anchors = &a, .nanchors = aseq ? 1 : 0, .cont = cont};
    return gw_audit_verify(files, 1, &o, devnull, devnull);
}

static void cleanup(void)
{
    if (path[0])
        unlink(path);
    if (torn[0])
        unlink(torn);
    if (dir[0])
        rmdir(dir);
}

static void init(void)
{
    snprintf(dir, sizeof dir, "/tmp/fuzz_audit.XXXXXX");
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(path, sizeof path, "%s/audit.jsonl", dir);
    snprintf(torn, sizeof torn, "%s.torn", path);
    devnull = fopen("/dev/null", "w");
    if (devnull == NULL)
        abort();
    atexit(cleanup);
}

static void write_input(const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    for (size_t off = 0; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    close(fd);
}

static void members(const uint8_t *data, size_t size)
{
    struct gw_json_error je;
    struct gw_json_opts o = {.max_depth = 64};
    cJSON *j = gw_json_parse((const char *)data, size, &o, &je);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return;
    }
    char *m = gw_audit_members(j);
    if (m == NULL)
        abort(); /* an object always has members (maybe none) */
    size_t n = strlen(m);
    char *wrapped = malloc(n + 3);
    if (wrapped == NULL)
        abort();
    wrapped[0] = '{';
    memcpy(wrapped + 1, m, n);
    wrapped[n + 1] = '}';
    wrapped[n + 2] = '\0';
    cJSON *back = gw_json_parse(wrapped, n + 2, &o, &je);
    if (back == NULL || !cJSON_Compare(j, back, true))
        abort(); /* the members are not the object's */
    cJSON_Delete(back);
    free(wrapped);
    free(m);
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (devnull == NULL)
        init();
    write_input(data, size);

    int plain = verify(NULL, 0, 0, false);
    int keyed = verify(key, sizeof key, 0, false);
    uint64_t aseq = size ? 1 + data[0] % 4 : 1;
    int anchored = verify(NULL, 0, aseq, true);
    int cont = verify(NULL, 0, 0, true);
    if ((plain != 0 && plain != 1) || (keyed != 0 && keyed != 1) ||
        (anchored != 0 && anchored != 1) || (cont != 0 && cont != 1))
        abort(); /* the file is readable */
    if (plain == 0 && cont != 0)
        abort(); /* --continue only relaxes the first record */

    /* a restart on this file: a log that verifies can be continued */
    struct gw_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.audit.file = path;
    char why[512];
    struct gw_audit *a = gw_audit_open(&cfg, why, sizeof why);
    if (plain == 0 && a == NULL)
        abort();
    bool opened = a != NULL, repaired = unlink(torn) == 0;
    gw_audit_free(a);
    if (opened && repaired &&
        ((size > 0 && data[size - 1] == '\n') || verify(NULL, 0, 0, true) != 0))
        abort(); /* only a torn last line is cut, and what is left verifies */

    /* audit-repair on the input as it came */
    write_input(data, size);
    int rr = gw_audit_repair(path, NULL, 0, devnull, devnull);
    unlink(torn);
    if (rr != 0 && rr != 1)
        abort(); /* the file is readable and writable */
    if (rr == 0 && verify(NULL, 0, 0, true) != 0)
        abort();
    if (rr == 1) { /* refused: the file is as it was */
        FILE *f = fopen(path, "rb");
        bool same = f != NULL;
        for (size_t i = 0; same && i < size; i++)
            same = fgetc(f) == data[i];
        if (f && same)
            same = fgetc(f) == EOF;
        if (f)
            fclose(f);
        if (!same)
            abort();
    }

    members(data, size);
    return 0;
}
