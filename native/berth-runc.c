/*
 * berth-runc: conmon's runtime. It runs runc in a mount namespace that lacks the other containers'
 * mounts, then becomes runc.
 *
 * Why: runc copies its caller's whole mount table into each new container and reads
 * /proc/self/mountinfo several times while it sets the container up (more under cgroup v1), so
 * `runc create` slows down with every container already running: each adds an overlay rootfs and
 * a pinned network namespace below berth's root. berthd keeps that root a private mount of its
 * own, so one lazy unmount here drops every one of those mounts from this process's copy of the
 * table; the directory underneath is the same one, so every file path stays valid. The mounts this
 * container needs (its rootfs, its namespace pin, volumes) are cloned first and put back.
 *
 * Its own options come first and are not passed on (conmon gives them as --runtime-arg):
 *   --berth-runc=PATH        the real runc (default /usr/sbin/runc)
 *   --berth-mount-root=PATH  berth's root, a mount point of its own in the caller's namespace
 *   --berth-keep=PATH        a mount below it to keep; repeatable
 * Without --berth-mount-root it only runs runc. When the kernel cannot clone mounts (open_tree came
 * in Linux 5.2) it runs runc with the whole table, which is slower but the same container.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

#define MAX_KEEP 64

static void die(const char *what, const char *path) {
  fprintf(stderr, "berth-runc: %s %s: %s\n", what, path ? path : "", strerror(errno));
  exit(127);
}

/* Returns 0 when the table was trimmed, 1 when trimming does not apply here (runc runs anyway). */
static int trim_mounts(const char *root, char **keep, int n) {
  int fds[MAX_KEEP];
  if (unshare(CLONE_NEWNS) != 0) return 1;
  /* Slave, not private: mounts the host adds later still reach the container as before, and
   * nothing this process unmounts can travel back to the host. */
  if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) != 0) die("make / a slave in", "a new mount namespace");
  for (int i = 0; i < n; i++) {
    fds[i] = (int)syscall(SYS_open_tree, AT_FDCWD, keep[i], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fds[i] < 0) {
      if (errno == ENOSYS) return 1;
      die("clone the mount at", keep[i]);
    }
  }
  if (umount2(root, MNT_DETACH) != 0) {
    if (errno == EINVAL) return 1; /* root is not a mount point: nothing to drop */
    die("detach", root);
  }
  for (int i = 0; i < n; i++) {
    if (syscall(SYS_move_mount, fds[i], "", AT_FDCWD, keep[i], MOVE_MOUNT_F_EMPTY_PATH) != 0) die("put back the mount at", keep[i]);
    close(fds[i]);
  }
  return 0;
}

static const char *option(const char *arg, const char *name) {
  size_t len = strlen(name);
  return strncmp(arg, name, len) == 0 && arg[len] == '=' ? arg + len + 1 : NULL;
}

int main(int argc, char **argv) {
  const char *runc = "/usr/sbin/runc";
  const char *root = NULL;
  char *keep[MAX_KEEP];
  int nkeep = 0;
  int i = 1;
  for (; i < argc; i++) {
    const char *v;
    if ((v = option(argv[i], "--berth-runc"))) runc = v;
    else if ((v = option(argv[i], "--berth-mount-root"))) root = v;
    else if ((v = option(argv[i], "--berth-keep"))) {
      if (nkeep == MAX_KEEP) { errno = E2BIG; die("too many mounts to keep", NULL); }
      keep[nkeep++] = (char *)v;
    } else break;
  }
  if (root && *root) trim_mounts(root, keep, nkeep);
  argv[i - 1] = "runc";
  execv(runc, argv + i - 1);
  die("exec", runc);
  return 127;
}
