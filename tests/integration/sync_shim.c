/* sync_shim: an LD_PRELOAD library for the integration tests only (never linked into the
 * product): fsync and fdatasync as a sick disk answers them, while the file named by the
 * environment variable GW_SYNC_SHIM says so:
 *   "delay MS"    every call sleeps MS milliseconds, then syncs
 *   "fail ERRNO"  every call fails with that errno
 *   anything else (or no file): the real call
 * The file is read at every call, so a test changes the disk under a running gateway. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Returns -1 with errno set when the call is to fail, else 0 (after any delay). */
static int sick(void)
{
    const char *ctl = getenv("GW_SYNC_SHIM");
    int fd = ctl ? open(ctl, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0)
        return 0;
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    if (strncmp(buf, "delay ", 6) == 0) {
        long ms = strtol(buf + 6, NULL, 10);
        if (ms > 0 && ms < 600000)
            usleep((useconds_t)ms * 1000);
    } else if (strncmp(buf, "fail ", 5) == 0) {
        long e = strtol(buf + 5, NULL, 10);
        errno = e > 0 && e < 4096 ? (int)e : EIO;
        return -1;
    }
    return 0;
}

static int real(const char *name, int fd)
{
    int (*f)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
    if (f == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return f(fd);
}

int fsync(int fd)
{
    return sick() != 0 ? -1 : real("fsync", fd);
}

int fdatasync(int fd)
{
    return sick() != 0 ? -1 : real("fdatasync", fd);
}
