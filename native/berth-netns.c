/*
 * berth-netns: berthd's work with network namespaces, which Node cannot do.
 *
 *   openSockets(path, address, port)  the embedded resolver's sockets, inside a container's namespace;
 *   createNetns(path)                 a new namespace with loopback up, pinned by a bind mount at path
 *                                     (an existing empty file), as `unshare --net=path` does, without
 *                                     an `unshare` process (a fork of berthd, 3-5 ms);
 *   unpin(path)                       lazily unmounts a pinned namespace (`umount --lazy`);
 *   loopbackUp(path)                  brings `lo` up inside the namespace at path (a CNI runtime's
 *                                     namespace without the loopback plugin), without an `ip`.
 *
 * Node has no setns, and a socket belongs for life to the namespace it was created in, so
 * openSockets has a short-lived thread enter the namespace pinned at a path and create and bind
 * a UDP socket and a listening TCP socket on the same address and port there. setns(CLONE_NEWNET)
 * changes only the calling thread, and that thread ends with it: no thread of berthd's ever leaves
 * berthd's namespace. berthd wraps the descriptors with dgram and net and serves them from its own
 * event loop; the container's queries then never leave its loopback. createNetns likewise makes
 * the namespace on a thread that ends with it.
 */
#define _GNU_SOURCE
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

/* A free port for UDP may be taken for TCP by a process of the container: try a few more. */
#define PORT_ATTEMPTS 32

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[4400];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, err == EADDRINUSE ? "EADDRINUSE" : NULL, msg);
  return NULL;
}

static void close_quietly(int fd) {
  if (fd >= 0) close(fd);
}

/* Binds UDP then TCP on addr:port (port 0: one free for both). Returns 0 or an errno. */
static int open_pair(struct in_addr addr, int port, int *udp_out, int *tcp_out, int *port_out, const char **what) {
  for (int attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr = addr, .sin_port = htons((unsigned short)port) };
    socklen_t len = sizeof sa;
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (udp < 0) { *what = "socket(udp)"; return errno; }
    /* Bursts from a busy container must queue, not drop, while the serving thread catches up. */
    int rcvbuf = 4 << 20;
    setsockopt(udp, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (bind(udp, (struct sockaddr *)&sa, sizeof sa) < 0 || getsockname(udp, (struct sockaddr *)&sa, &len) < 0) {
      int err = errno;
      close(udp);
      *what = "bind(udp)";
      return err;
    }
    int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (tcp < 0) { int err = errno; close(udp); *what = "socket(tcp)"; return err; }
    int one = 1;
    /* As Node's own listeners do: a TIME_WAIT left by the previous daemon must not block the port. */
    setsockopt(tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(tcp, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(tcp, 511) == 0) {
      *udp_out = udp;
      *tcp_out = tcp;
      *port_out = ntohs(sa.sin_port);
      return 0;
    }
    int err = errno;
    close(udp);
    close(tcp);
    if (!(err == EADDRINUSE && port == 0)) { *what = "bind(tcp)"; return err; }
  }
  *what = "bind";
  return EADDRINUSE;
}

struct open_job {
  const char *path;
  struct in_addr addr;
  int port, udp, tcp, bound, err;
  const char *what;
};

/*
 * Runs on a thread of its own that enters the container's namespace and ends there: berthd's own
 * threads never leave berthd's namespace, not even for a moment, since a child reading
 * /proc/<berthd>/ns/net meanwhile (as `ip link add ... netns <pid>` does) would find the container's.
 */
/* Moves the calling thread into the network namespace at path: 0, or an errno. */
int berth_enter_netns(const char *path) {
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) return errno;
  int err = setns(target, CLONE_NEWNET) < 0 ? errno : 0;
  close(target);
  return err;
}

static void *open_in_netns(void *arg) {
  struct open_job *job = arg;
  if ((job->err = berth_enter_netns(job->path))) {
    job->what = job->path;
    return NULL;
  }
  job->err = open_pair(job->addr, job->port, &job->udp, &job->tcp, &job->bound, &job->what);
  return NULL;
}

/* openSockets(netnsPath: string, address: string, port: number): { udp, tcp, port } */
static napi_value open_sockets(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "openSockets(netnsPath, address, port)");
    return NULL;
  }
  char path[4096], address[64];
  size_t n;
  int32_t port;
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof path, &n) != napi_ok || n == 0 || n >= sizeof path - 1 ||
      napi_get_value_string_utf8(env, argv[1], address, sizeof address, &n) != napi_ok ||
      napi_get_value_int32(env, argv[2], &port) != napi_ok || port < 0 || port > 65535) {
    napi_throw_type_error(env, NULL, "openSockets(netnsPath: string, address: string, port: number)");
    return NULL;
  }
  struct in_addr addr;
  if (inet_pton(AF_INET, address, &addr) != 1) {
    napi_throw_type_error(env, NULL, "openSockets: address must be an IPv4 address");
    return NULL;
  }

  struct open_job job = { .path = path, .addr = addr, .port = port, .udp = -1, .tcp = -1, .what = "" };
  pthread_t t;
  int err = pthread_create(&t, NULL, open_in_netns, &job);
  if (err) return throw_errno(env, "openSockets: thread", err);
  pthread_join(t, NULL);
  err = job.err;
  int udp = job.udp, tcp = job.tcp, bound = job.bound;
  const char *what = job.what;
  if (err) return throw_errno(env, what, err);

  napi_value out, v;
  if (napi_create_object(env, &out) != napi_ok) goto fail;
  if (napi_create_int32(env, udp, &v) != napi_ok || napi_set_named_property(env, out, "udp", v) != napi_ok) goto fail;
  if (napi_create_int32(env, tcp, &v) != napi_ok || napi_set_named_property(env, out, "tcp", v) != napi_ok) goto fail;
  if (napi_create_int32(env, bound, &v) != napi_ok || napi_set_named_property(env, out, "port", v) != napi_ok) goto fail;
  return out;
fail:
  close_quietly(udp);
  close_quietly(tcp);
  napi_throw_error(env, NULL, "openSockets: out of memory");
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
/* Loopback up in the calling thread's namespace, as `ip link set lo up` there would; 0 or -1 (errno). */
static int loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0 || (ifr.ifr_flags |= IFF_UP, ioctl(s, SIOCSIFFLAGS, &ifr) < 0)) {
    int err = errno;
    close(s);
    errno = err;
    return -1;
  }
  close(s);
  return 0;
}

static void *pin_new_netns(void *arg) {
  struct pin_job *job = arg;
  job->what = "unshare";
  if (unshare(CLONE_NEWNET) < 0) goto fail;
  job->what = "loopback up";
  if (loopback_up() < 0) goto fail;
  job->what = "pinning the namespace";
  if (mount("/proc/thread-self/ns/net", job->path, NULL, MS_BIND, NULL) < 0) goto fail;
  job->err = 0;
  return NULL;
fail:
  job->err = errno;
  return NULL;
}

/* A call taking a namespace path whose work runs on a thread of its own, ended with that thread. */
static napi_value path_job(napi_env env, napi_callback_info info, void *(*work)(void *), const char *name) {
  char path[4096];
  if (path_arg(env, info, path, sizeof path) < 0) return NULL;
  struct pin_job job = { .path = path, .what = "", .err = 0 };
  pthread_t t;
  int err = pthread_create(&t, NULL, work, &job);
  if (err) return throw_errno(env, name, err);
  pthread_join(t, NULL);
  if (job.err) return throw_errno(env, job.what, job.err);
  return NULL;
}

static napi_value create_netns(napi_env env, napi_callback_info info) {
  return path_job(env, info, pin_new_netns, "createNetns: thread");
}

static void *up_in_netns(void *arg) {
  struct pin_job *job = arg;
  job->what = job->path;
  if ((job->err = berth_enter_netns(job->path))) return NULL;
  job->what = "loopback up";
  job->err = loopback_up() < 0 ? errno : 0;
  return NULL;
}

static napi_value loopback_up_in(napi_env env, napi_callback_info info) {
  return path_job(env, info, up_in_netns, "loopbackUp: thread");
}

static napi_value unpin(napi_env env, napi_callback_info info) {
  char path[4096];
  if (path_arg(env, info, path, sizeof path) < 0) return NULL;
  if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT) return throw_errno(env, path, errno);
  return NULL;
}

/*
 * The index of a link of berthd's own namespace (its main thread never leaves it), 0 when there is
 * none: one lookup by name in the kernel, where a listing of /proc/self/net/dev costs as much as
 * the namespace has links (a host of 1,000 containers has 1,000 veths).
 */
static napi_value link_index(napi_env env, napi_callback_info info) {
  char name[IF_NAMESIZE + 1];
  size_t argc = 1, n = 0;
  napi_value argv[1], out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_string_utf8(env, argv[0], name, sizeof name, &n) != napi_ok || n == 0 || n >= IF_NAMESIZE) {
    napi_throw_type_error(env, NULL, "expected a link name");
    return NULL;
  }
  unsigned idx = if_nametoindex(name);
  if (idx == 0 && errno != ENODEV && errno != ENXIO) return throw_errno(env, "linkIndex", errno);
  if (napi_create_uint32(env, idx, &out) != napi_ok) return NULL;
  return out;
}

void berth_dnsfast_register(napi_env env, napi_value exports);
void berth_veth_register(napi_env env, napi_value exports);
void berth_peers_register(napi_env env, napi_value exports);
void berth_nftelems_register(napi_env env, napi_value exports);
void berth_nftsetin_register(napi_env env, napi_value exports);

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  berth_dnsfast_register(env, exports);
  berth_veth_register(env, exports);
  berth_peers_register(env, exports);
  berth_nftelems_register(env, exports);
  berth_nftsetin_register(env, exports);
  const struct { const char *name; napi_callback cb; } fns[] = {
    { "openSockets", open_sockets }, { "createNetns", create_netns }, { "unpin", unpin }, { "loopbackUp", loopback_up_in }, { "linkIndex", link_index },
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn) == napi_ok) {
      napi_set_named_property(env, exports, fns[i].name, fn);
    }
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
