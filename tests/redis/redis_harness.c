#include "redis_harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define READY_MS 5000 /* for a server to start, and for one to stop before SIGKILL */
#define LOG_CAP 65536 /* bytes of a log read back at most */
#define TAIL 600      /* bytes of a log quoted in a reason */
#define DRAWS 20      /* ports tried when the drawn one is taken before the server binds it */

/* redis 7.0 says "Ready to accept connections", 7.2 adds the transport: the common part. */
#define READY_LINE "Ready to accept connections"

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int fail(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *why, size_t whylen, const char *fmt, ...)
{
    if (why != NULL && whylen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Copies src (NULL as "") into dst of cap bytes; -1 when it does not fit. */
static int keep(char *dst, size_t cap, const char *src)
{
    if (src == NULL)
        src = "";
    size_t n = strlen(src);
    if (n >= cap)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* The log from byte `from` on, at most cap - 1 bytes (the last ones), NUL-terminated. */
static void read_log(const char *path, long from, char *buf, size_t cap)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    long size = file_size(path);
    if (size - from > (long)cap - 1)
        from = size - ((long)cap - 1);
    if (from > 0 && fseek(f, from, SEEK_SET) != 0) {
        fclose(f);
        return;
    }
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* The log's last TAIL bytes since `from`, for a reason. */
static const char *log_tail(const struct redis_srv *r, long from, char *buf, size_t cap)
{
    read_log(r->log, from, buf, cap < TAIL + 1 ? cap : TAIL + 1);
    return buf;
}

/* A port in 10000..32000 that nobody holds on loopback at the moment of the draw. Another
 * process may take it before the server binds it: wait_ready then sees the server give up. */
static int draw_port(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned seed = (unsigned)getpid() * 2654435761u ^ (unsigned)ts.tv_nsec;
    for (int attempt = 0; attempt < 200; attempt++) {
        int port = 10000 + (int)(rand_r(&seed) % 22001u);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return port;
    }
    return -1;
}

static int reap(pid_t pid, int *status, int flags)
{
    pid_t got;
    while ((got = waitpid(pid, status, flags)) < 0 && errno == EINTR)
        ;
    return got == pid ? 1 : got == 0 ? 0 : -1;
}

/* Forks and execs the server on r->port with r's options, its output appended to r->log. */
static int spawn(struct redis_srv *r, char *why, size_t whylen)
{
    char port[16], userspec[80], userpass[80];
    const char *prog = getenv("GW_REDIS_SERVER");
    if (prog == NULL || *prog == '\0')
        prog = "redis-server";
    snprintf(port, sizeof port, "%d", r->port);
    const char *argv[32];
    int argc = 0;
    const char *fixed[] = {
        prog,           "--port", port,    "--bind", "127.0.0.1",   "--save", "",
        "--appendonly", "no",     "--dir", r->dir,   "--daemonize", "no",     "--maxmemory-policy",
        "volatile-ttl"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        argv[argc++] = fixed[i];
    if (r->password[0] != '\0') {
        argv[argc++] = "--requirepass";
        argv[argc++] = r->password;
    }
    if (r->unix_path[0] != '\0') {
        argv[argc++] = "--unixsocket";
        argv[argc++] = r->unix_path;
        argv[argc++] = "--unixsocketperm";
        argv[argc++] = "700";
    }
    if (r->user[0] != '\0') {
        /* redis 7 reads "--user NAME on >PASSWORD ~* +@all" as the ACL rule of a config file */
        snprintf(userspec, sizeof userspec, "%s", r->user);
        snprintf(userpass, sizeof userpass, ">%s", r->user_password);
        const char *acl[] = {"--user", userspec, "on", userpass, "~*", "+@all"};
        for (size_t i = 0; i < sizeof acl / sizeof *acl; i++)
            argv[argc++] = acl[i];
    }
    argv[argc] = NULL;

    int log = open(r->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log < 0)
        return fail(why, whylen, "%s: %s", r->log, strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* only async-signal-safe calls from here to exec */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) /* the parent died before prctl: nobody would stop us */
            _exit(127);
        int null = open("/dev/null", O_RDONLY);
        if (null < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0)
            _exit(127);
        execvp(prog, (char *const *)argv);
        static const char msg[] = "redis_harness: cannot run ";
        if (write(2, msg, sizeof msg - 1) < 0 || write(2, prog, strlen(prog)) < 0 ||
            write(2, "\n", 1) < 0)
            _exit(127);
        _exit(127);
    }
    int err = errno;
    close(log);
    if (pid < 0)
        return fail(why, whylen, "fork: %s", strerror(err));
    r->pid = pid;
    return 0;
}

/* The process_id line of INFO server, or -1. */
static long info_pid(redisContext *c)
{
    redisReply *rep = redisCommand(c, "INFO server");
    long pid = -1;
    if (rep != NULL && rep->type == REDIS_REPLY_STRING) {
        const char *p = strstr(rep->str, "process_id:");
        if (p != NULL) {
            char *end;
            errno = 0;
            long v = strtol(p + strlen("process_id:"), &end, 10);
            if (errno == 0 && end != p + strlen("process_id:") && (*end == '\r' || *end == '\n'))
                pid = v;
        }
    }
    freeReplyObject(rep);
    return pid;
}

/* 0 when the server answers PING and INFO names r->pid. */
static int answers_as_ours(const struct redis_srv *r)
{
    redisContext *c = redis_connect(r, false, NULL, 0);
    if (c == NULL)
        return -1;
    redisReply *rep = redisCommand(c, "PING");
    int ok = rep != NULL && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    freeReplyObject(rep);
    if (ok)
        ok = info_pid(c) == (long)r->pid;
    redisFree(c);
    return ok ? 0 : -1;
}

/* Waits for the server just spawned (its log from byte `from`). 0 ready; 1 it exited because
 * its port was taken (another draw may do); -1 anything else, with why. The server is reaped
 * whenever this does not return 0. */
static int wait_ready(struct redis_srv *r, long from, char *why, size_t whylen)
{
    char *text = malloc(LOG_CAP);
    if (text == NULL) {
        kill(r->pid, SIGKILL);
        reap(r->pid, NULL, 0);
        r->pid = -1;
        return fail(why, whylen, "out of memory");
    }
    long end = now_ms() + READY_MS;
    int rc = -1;
    for (;;) {
        int status;
        if (reap(r->pid, &status, WNOHANG) != 0) {
            read_log(r->log, from, text, LOG_CAP);
            r->pid = -1;
            if (strstr(text, "Address already in use") != NULL) {
                rc = 1;
                fail(why, whylen, "port %d taken", r->port);
            } else {
                char tail[TAIL + 1];
                fail(why, whylen, "redis-server exited (%s %d): %s",
                     WIFEXITED(status) ? "status" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                     log_tail(r, from, tail, sizeof tail));
            }
            break;
        }
        read_log(r->log, from, text, LOG_CAP);
        if (strstr(text, READY_LINE) != NULL && answers_as_ours(r) == 0) {
            rc = 0;
            break;
        }
        if (now_ms() >= end) {
            char tail[TAIL + 1];
            kill(r->pid, SIGKILL);
            reap(r->pid, NULL, 0);
            r->pid = -1;
            fail(why, whylen, "redis-server on port %d not ready in %d ms: %s", r->port, READY_MS,
                 log_tail(r, from, tail, sizeof tail));
            break;
        }
        sleep_ms(20);
    }
    free(text);
    return rc;
}

static void remove_dir(struct redis_srv *r)
{
    if (r->dir[0] == '\0')
        return;
    DIR *d = opendir(r->dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
    }
    rmdir(r->dir);
    r->dir[0] = '\0';
}

int redis_start(struct redis_srv *r, const struct redis_opts *o, char *why, size_t whylen)
{
    static const struct redis_opts none;
    if (o == NULL)
        o = &none;
    memset(r, 0, sizeof *r);
    r->pid = -1;
    if (keep(r->password, sizeof r->password, o->password) != 0 ||
        keep(r->user, sizeof r->user, o->user) != 0 ||
        keep(r->user_password, sizeof r->user_password, o->user_password) != 0)
        return fail(why, whylen, "a password or user name is too long for redis_srv");
    if (r->user[0] != '\0' && r->user_password[0] == '\0')
        return fail(why, whylen, "an ACL user needs user_password");
    if (o->port < 0 || o->port > 65535)
        return fail(why, whylen, "port %d out of range", o->port);

    /* a short folder: the socket's path must fit sun_path (108 bytes) */
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 64)
        tmp = "/tmp";
    snprintf(r->dir, sizeof r->dir, "%s/gw-redis-XXXXXX", tmp);
    if (mkdtemp(r->dir) == NULL) {
        int err = errno;
        r->dir[0] = '\0';
        return fail(why, whylen, "mkdtemp in %s: %s", tmp, strerror(err));
    }
    snprintf(r->log, sizeof r->log, "%s/redis.log", r->dir);
    if (o->unix_socket)
        snprintf(r->unix_path, sizeof r->unix_path, "%s/redis.sock", r->dir);

    for (int draw = 0; draw < (o->port ? 1 : DRAWS); draw++) {
        r->port = o->port ? o->port : draw_port();
        if (r->port < 0)
            break;
        long from = file_size(r->log);
        if (spawn(r, why, whylen) != 0)
            break;
        int rc = wait_ready(r, from, why, whylen);
        if (rc == 0)
            return 0;
        if (rc < 0)
            break;
    }
    if (r->port < 0)
        fail(why, whylen, "no free port in 10000..32000");
    remove_dir(r);
    return -1;
}

/* SIGTERM and reap, SIGKILL after READY_MS. 0 when it exited with status 0. */
static int terminate(struct redis_srv *r)
{
    if (r->pid <= 0)
        return 0;
    int status = 0, rc = -1;
    kill(r->pid, SIGTERM);
    long end = now_ms() + READY_MS;
    int got;
    while ((got = reap(r->pid, &status, WNOHANG)) == 0 && now_ms() < end)
        sleep_ms(10);
    if (got == 0) {
        kill(r->pid, SIGKILL);
        reap(r->pid, NULL, 0);
    } else if (got == 1 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        rc = 0;
    }
    r->pid = -1;
    return rc;
}

int redis_stop(struct redis_srv *r)
{
    int rc = terminate(r);
    remove_dir(r);
    return rc;
}

int redis_kill(struct redis_srv *r)
{
    if (r->pid <= 0)
        return -1;
    kill(r->pid, SIGKILL);
    int got = reap(r->pid, NULL, 0);
    r->pid = -1;
    return got == 1 ? 0 : -1;
}

int redis_restart(struct redis_srv *r, char *why, size_t whylen)
{
    if (r->dir[0] == '\0')
        return fail(why, whylen, "redis_restart: the server was stopped, not started");
    if (terminate(r) != 0)
        return fail(why, whylen, "redis_restart: the old server did not exit cleanly");
    long from = file_size(r->log);
    if (spawn(r, why, whylen) != 0)
        return -1;
    return wait_ready(r, from, why, whylen) == 0 ? 0 : -1;
}

redisContext *redis_connect(const struct redis_srv *r, bool via_unix, char *why, size_t whylen)
{
    struct timeval connect_to = {1, 0}, command_to = {5, 0};
    if (via_unix && r->unix_path[0] == '\0') {
        fail(why, whylen, "the server has no unix socket (redis_opts.unix_socket)");
        return NULL;
    }
    redisContext *c = via_unix ? redisConnectUnixWithTimeout(r->unix_path, connect_to)
                               : redisConnectWithTimeout("127.0.0.1", r->port, connect_to);
    if (c == NULL || c->err) {
        fail(why, whylen, "connect to %s: %s", via_unix ? r->unix_path : "127.0.0.1",
             c ? c->errstr : "out of memory");
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, command_to);
    redisReply *rep = NULL;
    if (r->user[0] != '\0')
        rep = redisCommand(c, "AUTH %s %s", r->user, r->user_password);
    else if (r->password[0] != '\0')
        rep = redisCommand(c, "AUTH %s", r->password);
    else
        return c;
    bool ok = rep != NULL && rep->type == REDIS_REPLY_STATUS;
    if (!ok)
        fail(why, whylen, "AUTH: %s", rep && rep->type == REDIS_REPLY_ERROR ? rep->str : c->errstr);
    freeReplyObject(rep);
    if (!ok) {
        redisFree(c);
        return NULL;
    }
    return c;
}
