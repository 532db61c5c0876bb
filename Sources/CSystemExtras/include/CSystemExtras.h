#ifndef LIVECOPY_CSYSTEMEXTRAS_H
#define LIVECOPY_CSYSTEMEXTRAS_H

/// Linux calls Swift's Glibc module does not import (they need _GNU_SOURCE).

#ifdef __linux__
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

/// Starts writing back the dirty page-cache pages of the file open as `fd`, without
/// waiting for them (`sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)`). Returns 0, or
/// -1 with errno set.
static inline int livecopy_start_writeback(int fd) {
    return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}
/// Whether another open file description than `fd` (opened read-only by the caller)
/// exists for its file, in any process: 0 no, 1 yes, -1 cannot tell (leases unsupported
/// by the file system, or not permitted; errno set). A write lease can be taken only
/// when nobody else has the file open; it is released at once.
/// While the lease is held (microseconds), another process opening the file makes the
/// kernel signal this one with SIGIO, whose default action ends the process: it is
/// ignored (livecopy uses no SIGIO otherwise), and the lease is released at once.
static inline int livecopy_open_elsewhere(int fd) {
    signal(SIGIO, SIG_IGN);
    if (fcntl(fd, F_SETLEASE, F_WRLCK) == 0) {
        fcntl(fd, F_SETLEASE, F_UNLCK);
        return 0;
    }
    return errno == EAGAIN ? 1 : -1;
}
/// Renames `from` to `to` only if nothing is at `to` (`renameat2` with
/// `RENAME_NOREPLACE`): 0, or -1 with errno set (EEXIST when `to` exists, ENOENT when
/// `from` does not). On a file system without `RENAME_NOREPLACE`, `link` (which never
/// replaces a name) then `unlink` does the same.
static inline int livecopy_rename_noreplace(const char *from, const char *to) {
    if (syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 1 /* RENAME_NOREPLACE */) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
    if (link(from, to) != 0) return -1;
    if (unlink(from) != 0) {
        int saved = errno;
        unlink(to);
        errno = saved;
        return -1;
    }
    return 0;
}
#else
#include <errno.h>
#include <stdio.h>
static inline int livecopy_rename_noreplace(const char *from, const char *to) {
    (void)from;
    (void)to;
    errno = ENOSYS;
    return -1;
}
static inline int livecopy_start_writeback(int fd) {
    (void)fd;
    errno = ENOSYS;
    return -1;
}
static inline int livecopy_open_elsewhere(int fd) {
    (void)fd;
    errno = ENOSYS;
    return -1;
}
#endif

#endif
