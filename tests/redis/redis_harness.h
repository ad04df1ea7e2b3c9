/* redis_harness: a real redis-server for the tests (unit and integration suites alike), on a
 * loopback port and in a temporary folder of its own, with nothing saved to disk.
 *
 * No test framework here: every call returns 0 or -1, and on -1 writes the reason (with the
 * tail of the server's log when it helps) to why, cut at whylen. The server is started with
 * PR_SET_PDEATHSIG, so a test process that dies on a failed assertion takes its redis with it
 * (its folder stays behind in that case only). A redis_srv belongs to the thread that started
 * it; the connections redis_connect returns are the caller's, freed with redisFree.
 *
 * The program run is redis-server from PATH, or the one GW_REDIS_SERVER names.
 */
#ifndef GW_REDIS_HARNESS_H
#define GW_REDIS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct redisContext; /* hiredis */

/* Options for redis_start; zero values mean the defaults beside them. */
struct redis_opts {
    int port;                  /* 0: a free port drawn in 10000..32000 */
    const char *password;      /* requirepass (the default user's password); NULL: none */
    const char *user;          /* an ACL user with every right (~* +@all); NULL: none */
    const char *user_password; /* its password: required with user */
    bool unix_socket;          /* also listen on <dir>/redis.sock, mode 700 (unix_path) */
};

/* A running server as redis_start left it. The options are kept for redis_restart. */
struct redis_srv {
    pid_t pid; /* -1 when not running */
    int port;
    char dir[256];          /* its temporary folder: log and socket; removed by redis_stop */
    char password[64];      /* "" without requirepass */
    char user[32];          /* "" without an ACL user */
    char user_password[64]; /* the ACL user's password */
    char unix_path[300];    /* "" without the unix socket */
    char log[300];          /* the server's stdout and stderr, kept across restarts */
};

/* Starts a server and returns once it is ours and ready: the process is alive, its log says it
 * accepts connections, and a PING (after AUTH when a password is set) is answered by a server
 * whose INFO names our pid. With port 0 a port another process took meanwhile is given up for
 * another draw. Bounded: 5 s for the server to become ready. o may be NULL. */
int redis_start(struct redis_srv *r, const struct redis_opts *o, char *why, size_t whylen);

/* SIGTERM, waits for the exit (SIGKILL after 5 s) and removes the folder. Also after
 * redis_kill, and harmless twice. -1 when the server did not exit cleanly. */
int redis_stop(struct redis_srv *r);

/* SIGKILL and reap, as a store that fails would: the folder stays for redis_restart. */
int redis_kill(struct redis_srv *r);

/* Stops the server if it runs (SIGTERM) and starts it again on the same port with the same
 * options and folder, empty (nothing is saved). -1 when it cannot (e.g. the port was taken). */
int redis_restart(struct redis_srv *r, char *why, size_t whylen);

/* A synchronous hiredis connection to r, authenticated as the ACL user when there is one, else
 * with the password when there is one; over the unix socket when via_unix (which needs
 * unix_socket). Commands time out after 5 s. NULL with why on failure. */
struct redisContext *redis_connect(const struct redis_srv *r, bool via_unix, char *why,
                                   size_t whylen);

#endif
