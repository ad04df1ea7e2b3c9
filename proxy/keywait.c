#include "keywait.h"

#include <stdatomic.h>
#include <stdlib.h>

#include <event2/event.h>

#include "issuers.h"

struct wait {
    struct gw_keywait *kw;
    struct wait *prev, *next;
    struct gw_issuer *is;
    unsigned long gen; /* is->fetch_gen when parked */
    struct event *timer;
    gw_keywait_cb cb;
    void *arg;
};

struct gw_keywait {
    struct event_base *base;
    struct event *fetched; /* activated by the fetcher's thread */
    struct wait *head;
    size_t n;
};

static void unlink_wait(struct wait *w)
{
    struct gw_keywait *kw = w->kw;
    if (w->prev)
        w->prev->next = w->next;
    else
        kw->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    kw->n--;
}

/* Frees w (off the list already), then answers it. */
static void answer(struct wait *w, bool fetched)
{
    gw_keywait_cb cb = w->cb;
    void *arg = w->arg;
    event_free(w->timer);
    free(w);
    cb(arg, fetched);
}

/* Answers the waits of the list ready (linked by next, off kw's list): taken off together
 * first, so a callback that parks or ends other requests never meets a wait of this pass. */
static void answer_all(struct wait *ready, bool fetched)
{
    while (ready) {
        struct wait *w = ready;
        ready = w->next;
        answer(w, fetched);
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wait *w = arg;
    unlink_wait(w);
    answer(w, false);
}

static void on_fetched(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_keywait *kw = arg;
    struct wait *ready = NULL;
    for (struct wait *w = kw->head, *next; w; w = next) {
        next = w->next;
        if (atomic_load(&w->is->fetch_gen) != w->gen) {
            unlink_wait(w);
            w->next = ready;
            ready = w;
        }
    }
    answer_all(ready, true);
}

struct gw_keywait *gw_keywait_new(struct event_base *base)
{
    struct gw_keywait *kw = calloc(1, sizeof *kw);
    if (kw == NULL)
        return NULL;
    kw->base = base;
    kw->fetched = event_new(base, -1, 0, on_fetched, kw);
    if (kw->fetched == NULL) {
        free(kw);
        return NULL;
    }
    return kw;
}

void gw_keywait_cancel_all(struct gw_keywait *kw)
{
    struct wait *all = kw->head;
    kw->head = NULL;
    kw->n = 0;
    answer_all(all, false);
}

void gw_keywait_free(struct gw_keywait *kw)
{
    if (kw == NULL)
        return;
    gw_keywait_cancel_all(kw);
    event_free(kw->fetched);
    free(kw);
}

bool gw_keywait_park(struct gw_keywait *kw, struct gw_issuer *is, unsigned long gen, long ms,
                     gw_keywait_cb cb, void *arg)
{
    if (kw->n >= GW_KEYWAIT_MAX)
        return false;
    struct wait *w = calloc(1, sizeof *w);
    if (w == NULL)
        return false;
    w->timer = evtimer_new(kw->base, on_timeout, w);
    if (w->timer == NULL) {
        free(w);
        return false;
    }
    w->gen = gen;
    w->kw = kw;
    w->is = is;
    w->cb = cb;
    w->arg = arg;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(w->timer, &tv);
    w->next = kw->head;
    /* a fetch that ended before the wait parked has moved fetch_gen already: answered at
     * the next pass of the loop */
    if (atomic_load(&is->fetch_gen) != gen)
        event_active(kw->fetched, EV_TIMEOUT, 0);
    if (kw->head)
        kw->head->prev = w;
    kw->head = w;
    kw->n++;
    return true;
}

void gw_keywait_fetched(struct gw_keywait *kw)
{
    event_active(kw->fetched, EV_TIMEOUT, 0);
}

size_t gw_keywait_count(const struct gw_keywait *kw)
{
    return kw->n;
}
