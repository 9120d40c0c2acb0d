/*
 * berth-ns: network namespaces without helper processes.
 *
 * Node has no unshare, so berthd used to start `unshare --net=PATH` to make a container's
 * namespace and `umount --lazy PATH` to release it: each a fork of berthd (3-5 ms here, more as
 * berthd grows) plus an exec. unshare(CLONE_NEWNET) changes only the calling thread, so a short-lived
 * thread makes and pins the namespace and ends with it:
 *
 *   createNetns(path)  a new namespace with loopback up, pinned by a bind mount at path (an
 *                      existing empty file), as `unshare --net=path` does;
 *   unpin(path)        lazily unmounts a pinned namespace (`umount --lazy`); not pinned is fine.
 */
#define _GNU_SOURCE
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

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

struct pin_job { const char *path; const char *what; int err; };

/*
 * Runs on a thread of its own, which ends with the namespace it made: berthd's threads never leave
 * berthd's namespace, not even for a moment (a child reading /proc/<berthd>/ns/net meanwhile, as
 * `ip link add ... netns <pid>` does, would otherwise find the container's).
 */
static void *pin_new_netns(void *arg) {
  struct pin_job *job = arg;
  job->what = "unshare";
  if (unshare(CLONE_NEWNET) < 0) goto fail;
  /* Loopback up, as `ip link set lo up` inside it would. */
  job->what = "loopback up";
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) goto fail;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0 || (ifr.ifr_flags |= IFF_UP, ioctl(s, SIOCSIFFLAGS, &ifr) < 0)) {
    int err = errno;
    close(s);
    errno = err;
    goto fail;
  }
  close(s);
  job->what = "pinning the namespace";
  if (mount("/proc/thread-self/ns/net", job->path, NULL, MS_BIND, NULL) < 0) goto fail;
  job->err = 0;
  return NULL;
fail:
  job->err = errno;
  return NULL;
}

static napi_value create_netns(napi_env env, napi_callback_info info) {
  char path[4096];
  if (path_arg(env, info, path, sizeof path) < 0) return NULL;
  struct pin_job job = { .path = path, .what = "", .err = 0 };
  pthread_t t;
  int err = pthread_create(&t, NULL, pin_new_netns, &job);
  if (err) return throw_errno(env, "createNetns: thread", err);
  pthread_join(t, NULL);
  if (job.err) return throw_errno(env, job.what, job.err);
  return NULL;
}

static napi_value unpin(napi_env env, napi_callback_info info) {
  char path[4096];
  if (path_arg(env, info, path, sizeof path) < 0) return NULL;
  if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT) return throw_errno(env, path, errno);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  const struct { const char *name; napi_callback cb; } fns[] = {
    { "createNetns", create_netns }, { "unpin", unpin },
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
