#include "ratelimit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 64
#define SHARD_CAP 1024 /* subjects per shard (65,536 in all) */
#define ID_BYTES 32    /* a subject id: a SHA-256 digest */

struct entry {
    struct entry *next;
    uint64_t word; /* the id's first 8 bytes: most mismatches end here */
    uint64_t tat;  /* theoretical arrival time, ns */
    unsigned char id[ID_BYTES];
};

struct shard {
    pthread_mutex_t mu;
    struct entry *head;
    size_t n;
};

struct gw_rl {
    struct shard shards[SHARDS];
    _Atomic uint64_t up_tat;
    _Atomic uint64_t up_day; /* day << 32 | count */
};

struct gw_rl *gw_rl_new(void)
{
    struct gw_rl *rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        return NULL;
    for (size_t i = 0; i < SHARDS; i++)
        pthread_mutex_init(&rl->shards[i].mu, NULL);
    atomic_init(&rl->up_tat, 0);
    atomic_init(&rl->up_day, 0);
    return rl;
}

void gw_rl_free(struct gw_rl *rl)
{
    if (rl == NULL)
        return;
    for (size_t i = 0; i < SHARDS; i++) {
        for (struct entry *e = rl->shards[i].head, *next; e; e = next) {
            next = e->next;
            free(e);
        }
        pthread_mutex_destroy(&rl->shards[i].mu);
    }
    free(rl);
}

/* GCRA on one arrival time: T = per_seconds / burst, tolerance tau = T * (burst - 1).
 * Returns the new arrival time when allowed, or 0 with the verdict filled when refused. */
static uint64_t gcra(uint64_t tat, long burst, long per_seconds, uint64_t now,
                     struct gw_rl_verdict *v)
{
    uint64_t t = (uint64_t)per_seconds * 1000000000ull / (uint64_t)burst;
    if (t == 0)
        t = 1;
    uint64_t tau = t * (uint64_t)(burst - 1);
    uint64_t base = tat > now ? tat : now;
    v->max = burst;
    v->interval_ms = per_seconds * 1000;
    if (base - now > tau) { /* the bucket is empty */
        uint64_t wait = base - now - tau;
        v->allowed = false;
        v->remaining = 0;
        v->retry_after_s = (long)((wait + 999999999ull) / 1000000000ull);
        if (v->retry_after_s < 1)
            v->retry_after_s = 1;
        return 0;
    }
    uint64_t next = base + t;
    v->allowed = true;
    /* what is left now: (now + tau - next) / T + 1 further requests */
    v->remaining = now + tau >= next ? (long)((now + tau - next) / t) + 1 : 0;
    if (v->remaining > burst - 1)
        v->remaining = burst - 1;
    return next;
}

void gw_rl_subject(struct gw_rl *rl, const unsigned char subject[ID_BYTES], long burst,
                   long per_seconds, uint64_t now_ns, struct gw_rl_verdict *v)
{
    memset(v, 0, sizeof *v);
    if (now_ns == 0)
        now_ns = 1; /* 0 marks a fresh bucket */
    uint64_t word;  /* a digest's bytes are already uniformly spread: no hashing again */
    memcpy(&word, subject, sizeof word);
    struct shard *s = &rl->shards[word % SHARDS];
    pthread_mutex_lock(&s->mu);
    struct entry *e = s->head;
    while (e && !(e->word == word && memcmp(e->id, subject, ID_BYTES) == 0))
        e = e->next;
    if (e == NULL) {
        if (s->n >= SHARD_CAP && s->head) {
            /* room: drop the bucket that has been full (idle) the longest */
            struct entry **oldest = NULL;
            for (struct entry **pp = &s->head; *pp; pp = &(*pp)->next)
                if (oldest == NULL || (*pp)->tat < (*oldest)->tat)
                    oldest = pp;
            struct entry *gone = *oldest;
            *oldest = gone->next;
            free(gone);
            s->n--;
        }
        e = calloc(1, sizeof *e);
        if (e == NULL) { /* fail closed: no bucket, no request */
            pthread_mutex_unlock(&s->mu);
            v->allowed = false;
            v->retry_after_s = 1;
            v->max = burst;
            v->interval_ms = per_seconds * 1000;
            return;
        }
        e->word = word;
        memcpy(e->id, subject, ID_BYTES);
        e->next = s->head;
        s->head = e;
        s->n++;
    }
    uint64_t next = gcra(e->tat, burst, per_seconds, now_ns, v);
    if (v->allowed)
        e->tat = next;
    pthread_mutex_unlock(&s->mu);
}

void gw_rl_upstream(struct gw_rl *rl, long burst, long per_seconds, long daily, uint64_t now_ns,
                    int64_t wall_s, struct gw_rl_verdict *v)
{
    memset(v, 0, sizeof *v);
    /* the daily budget first: a request it refuses must not spend the burst */
    uint64_t day = (uint64_t)(wall_s / 86400);
    uint64_t cur = atomic_load(&rl->up_day), want;
    do {
        uint64_t cday = cur >> 32, count = cur & 0xffffffffull;
        if (cday != day)
            count = 0;
        if (count >= (uint64_t)daily) {
            v->allowed = false;
            v->daily = true;
            v->max = daily;
            v->remaining = 0;
            v->interval_ms = 86400000;
            v->retry_after_s = (long)((int64_t)(day + 1) * 86400 - wall_s);
            if (v->retry_after_s < 1)
                v->retry_after_s = 1;
            return;
        }
        want = day << 32 | (count + 1);
    } while (!atomic_compare_exchange_weak(&rl->up_day, &cur, want));
    uint64_t tat = atomic_load(&rl->up_tat), next;
    do {
        next = gcra(tat, burst, per_seconds, now_ns ? now_ns : 1, v);
        if (!v->allowed) {
            /* give the daily unit back (unless the day has turned since): no call is made */
            uint64_t d = atomic_load(&rl->up_day);
            while (d >> 32 == day && (d & 0xffffffffull) > 0 &&
                   !atomic_compare_exchange_weak(&rl->up_day, &d, d - 1))
                ;
            return;
        }
    } while (!atomic_compare_exchange_weak(&rl->up_tat, &tat, next));
}

long gw_rl_daily_used(struct gw_rl *rl, int64_t wall_s)
{
    uint64_t cur = atomic_load(&rl->up_day);
    return cur >> 32 == (uint64_t)(wall_s / 86400) ? (long)(cur & 0xffffffffull) : 0;
}
