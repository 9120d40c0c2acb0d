/*
 * berth-ns: network namespaces without helper processes.
 *
 * Node has no setns or unshare, so berthd used to start `unshare --net=PATH` to make a container's
 * namespace and `nsenter --net=PATH ip ...` to work inside one: each a fork of berthd (3-5 ms here,
 * more as berthd grows) plus an exec. setns(CLONE_NEWNET) and unshare(CLONE_NEWNET) change only the
 * calling thread, so these calls do their work on the JavaScript thread and return it to berthd's
 * own namespace before any JavaScript runs again:
 *
 *   createNetns(path)  a new namespace with loopback up, pinned by a bind mount at path (an
 *                      existing empty file), as `unshare --net=path` does;
 *   enter(path)        the thread enters the namespace pinned at path; a child spawned now is
 *                      born in it (fork copies the thread's namespaces);
 *   leave()            back to berthd's namespace. berthd calls it right after spawn() returns;
 *   unpin(path)        lazily unmounts a pinned namespace (`umount --lazy`); not pinned is fine.
 */
#define _GNU_SOURCE
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

/* berthd's own namespace while the thread is elsewhere; -1 when it is at home. */
static int home = -1;

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[4400];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static int path_arg(napi_env env, napi_callback_info info, char *path, size_t size) {
  size_t argc = 1, n = 0;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_string_utf8(env, argv[0], path, size, &n) != napi_ok || n == 0 || n >= size - 1) {
    napi_throw_type_error(env, NULL, "expected a namespace path");
    return -1;
  }
  return 0;
}

/* Returning home must never fail silently: every socket and child made after would be elsewhere. */
static void go_home(void) {
  if (home < 0) return;
  if (setns(home, CLONE_NEWNET) < 0) {
    fprintf(stderr, "berth-ns: cannot return to berthd's network namespace: %s\n", strerror(errno));
    abort();
  }
  close(home);
  home = -1;
}

static int save_home(void) {
  if (home >= 0) return EBUSY;
  home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  return home < 0 ? errno : 0;
}

static napi_value enter(napi_env env, napi_callback_info info) {
  char path[4096];
  if (path_arg(env, info, path, sizeof path) < 0) return NULL;
  int err = save_home();
  if (err) return throw_errno(env, "enter: saving berthd's namespace", err);
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0 || setns(target, CLONE_NEWNET) < 0) {
    err = errno;
    if (target >= 0) close(target);
    go_home();
    return throw_errno(env, path, err);
  }
  close(target);
  return NULL;
}

static napi_value leave(napi_env env, napi_callback_info info) {
  (void)env;
  (void)info;
  go_home();
  return NULL;
}

static napi_value create_netns(napi_env env, napi_callback_info info) {
  char path[4096];
  if (path_arg(env, info, path, sizeof path) < 0) return NULL;
  int err = save_home();
  if (err) return throw_errno(env, "createNetns: saving berthd's namespace", err);
  const char *what = "unshare";
  if (unshare(CLONE_NEWNET) < 0) goto fail;
  /* Loopback up, as `ip link set lo up` inside it would. */
  what = "loopback up";
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) goto fail;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) { err = errno; close(s); errno = err; goto fail; }
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) { err = errno; close(s); errno = err; goto fail; }
  close(s);
  what = "pinning the namespace";
  if (mount("/proc/thread-self/ns/net", path, NULL, MS_BIND, NULL) < 0) goto fail;
  go_home();
  return NULL;
fail:
  err = errno;
  go_home();
  return throw_errno(env, what, err);
}

static napi_value unpin(napi_env env, napi_callback_info info) {
  char path[4096];
  if (path_arg(env, info, path, sizeof path) < 0) return NULL;
  if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT) return throw_errno(env, path, errno);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  const struct { const char *name; napi_callback cb; } fns[] = {
    { "createNetns", create_netns }, { "enter", enter }, { "leave", leave }, { "unpin", unpin },
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn) == napi_ok) {
      napi_set_named_property(env, exports, fns[i].name, fn);
    }
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
