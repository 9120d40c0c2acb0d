/*
 * berth-veth: an endpoint's veth made and configured inside a container's namespace over rtnetlink,
 * without an `ip` process (starting one, inside a namespace, is most of a `network connect`).
 *
 *   joinVeth({ netnsPath, ifname, hostIf, mac, mtu, address, gateway?, address6?, gateway6? })
 *     -> Promise<void>
 *
 * Does what `ip -batch` did inside the namespace, in the same order: the pair with the container's
 * end named `ifname` (MAC, MTU) and its peer `hostIf` sent to berthd's namespace; the IPv4 address;
 * the link up; the default route via `gateway` (replaced); the IPv6 address without duplicate
 * address detection (the gateway must answer at once); its default route. Each request waits for
 * the kernel's acknowledgement, so the first error stops the rest and is reported as
 * "<step> <ifname>: <reason>"; a pair made before a failing step is deleted again.
 *
 * The work runs on a thread of its own that ends with it: berthd's threads never leave berthd's
 * namespace (see berth-netns.c). The netlink socket is made after setns, so it belongs to the
 * container's namespace; the peer is sent home by a descriptor of berthd's namespace opened before.
 */
#define _GNU_SOURCE
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "berth-napi.h"
#include "berth-nl.h"

/* <net/if.h> clashes with <linux/if.h>, which the netlink headers need. */
extern unsigned int if_nametoindex(const char *ifname);
/* berth-netns.c */
int berth_enter_netns(const char *path);

struct veth_job {
  char netns[4096];
  char ifname[IFNAMSIZ], host_if[IFNAMSIZ];
  unsigned char mac[6];
  uint32_t mtu;
  struct in_addr addr, gw;
  int prefix, has_gw;
  struct in6_addr addr6, gw6;
  int prefix6, has_addr6, has_gw6;
  /* Result. */
  int err;
  char what[64];
  napi_async_work work;
  napi_deferred deferred;
};

static void *veth_in_netns(void *arg) {
  struct veth_job *job = arg;
  int home = -1, fd = -1;
  uint32_t seq = 0;
  unsigned idx = 0;
  _Alignas(struct nlmsghdr) char req[1024];
  struct nlmsghdr *n = (struct nlmsghdr *)req;
#define STEP(name) snprintf(job->what, sizeof job->what, "%s", name)
#define FAIL(e) do { job->err = (e); goto done; } while (0)

  STEP("berthd's namespace");
  home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) FAIL(errno);
  STEP("entering the namespace");
  int entered = berth_enter_netns(job->netns);
  if (entered) FAIL(entered);
  STEP("netlink socket");
  fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) FAIL(errno);

  /* link add name IFNAME address MAC mtu MTU type veth peer name HOSTIF mtu MTU netns <berthd's> */
  STEP("link add");
  memset(req, 0, sizeof req);
  n->nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
  n->nlmsg_type = RTM_NEWLINK;
  n->nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
  ((struct ifinfomsg *)NLMSG_DATA(n))->ifi_family = AF_UNSPEC;
  add_attr(n, IFLA_IFNAME, job->ifname, strlen(job->ifname) + 1);
  add_attr(n, IFLA_ADDRESS, job->mac, 6);
  add_attr(n, IFLA_MTU, &job->mtu, 4);
  struct rtattr *linkinfo = nest_start(n, IFLA_LINKINFO);
  add_attr(n, IFLA_INFO_KIND, "veth", 5);
  struct rtattr *data = nest_start(n, IFLA_INFO_DATA);
  struct rtattr *peer = nest_start(n, VETH_INFO_PEER);
  /* The peer's attributes follow an ifinfomsg of its own. */
  memset(attr_tail(n), 0, sizeof(struct ifinfomsg));
  n->nlmsg_len += sizeof(struct ifinfomsg);
  add_attr(n, IFLA_IFNAME, job->host_if, strlen(job->host_if) + 1);
  add_attr(n, IFLA_MTU, &job->mtu, 4);
  uint32_t home_fd = (uint32_t)home;
  add_attr(n, IFLA_NET_NS_FD, &home_fd, 4);
  nest_end(n, peer);
  nest_end(n, data);
  nest_end(n, linkinfo);
  int e = talk(fd, n, ++seq);
  if (e) FAIL(e);

  idx = if_nametoindex(job->ifname);
  if (!idx) FAIL(errno ? errno : ENODEV);

  /* addr add ADDRESS/PREFIX dev IFNAME */
  STEP("addr add");
  memset(req, 0, sizeof req);
  n->nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
  n->nlmsg_type = RTM_NEWADDR;
  n->nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
  struct ifaddrmsg *ifa = NLMSG_DATA(n);
  ifa->ifa_family = AF_INET;
  ifa->ifa_prefixlen = (unsigned char)job->prefix;
  ifa->ifa_index = idx;
  add_attr(n, IFA_LOCAL, &job->addr, 4);
  add_attr(n, IFA_ADDRESS, &job->addr, 4);
  if ((e = talk(fd, n, ++seq))) FAIL(e);

  /* link set IFNAME up */
  STEP("link set up");
  memset(req, 0, sizeof req);
  n->nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
  n->nlmsg_type = RTM_NEWLINK;
  struct ifinfomsg *ifi = NLMSG_DATA(n);
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = (int)idx;
  ifi->ifi_flags = IFF_UP;
  ifi->ifi_change = IFF_UP;
  if ((e = talk(fd, n, ++seq))) FAIL(e);

  for (int family = 0; family < 2; family++) {
    if (family == 1 && job->has_addr6) {
      /* addr add ADDRESS6/PREFIX6 dev IFNAME nodad */
      STEP("addr add (IPv6)");
      memset(req, 0, sizeof req);
      n->nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
      n->nlmsg_type = RTM_NEWADDR;
      n->nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
      ifa = NLMSG_DATA(n);
      ifa->ifa_family = AF_INET6;
      ifa->ifa_prefixlen = (unsigned char)job->prefix6;
      ifa->ifa_flags = IFA_F_NODAD;
      ifa->ifa_index = idx;
      add_attr(n, IFA_LOCAL, &job->addr6, 16);
      add_attr(n, IFA_ADDRESS, &job->addr6, 16);
      if ((e = talk(fd, n, ++seq))) FAIL(e);
    }
    if (family == 0 ? !job->has_gw : !job->has_gw6) continue;
    /* route replace default via GATEWAY dev IFNAME */
    STEP(family == 0 ? "route replace default" : "route replace default (IPv6)");
    memset(req, 0, sizeof req);
    n->nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    n->nlmsg_type = RTM_NEWROUTE;
    n->nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
    struct rtmsg *rt = NLMSG_DATA(n);
    rt->rtm_family = family == 0 ? AF_INET : AF_INET6;
    rt->rtm_table = RT_TABLE_MAIN;
    rt->rtm_protocol = RTPROT_BOOT;
    rt->rtm_scope = RT_SCOPE_UNIVERSE;
    rt->rtm_type = RTN_UNICAST;
    if (family == 0) add_attr(n, RTA_GATEWAY, &job->gw, 4);
    else add_attr(n, RTA_GATEWAY, &job->gw6, 16);
    uint32_t oif = idx;
    add_attr(n, RTA_OIF, &oif, 4);
    if ((e = talk(fd, n, ++seq))) FAIL(e);
  }
  job->err = 0;
done:
  if (job->err && idx) {
    /* A later step failed: the pair goes (with its peer), as if never made. */
    memset(req, 0, sizeof req);
    n->nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    n->nlmsg_type = RTM_DELLINK;
    ((struct ifinfomsg *)NLMSG_DATA(n))->ifi_index = (int)idx;
    talk(fd, n, ++seq);
  }
  if (fd >= 0) close(fd);
  if (home >= 0) close(home);
  return NULL;
#undef STEP
#undef FAIL
}

static void execute(napi_env env, void *data) {
  (void)env;
  struct veth_job *job = data;
  pthread_t t;
  int err = pthread_create(&t, NULL, veth_in_netns, job);
  if (err) {
    job->err = err;
    snprintf(job->what, sizeof job->what, "thread");
    return;
  }
  pthread_join(t, NULL);
}

static void complete(napi_env env, napi_status status, void *data) {
  struct veth_job *job = data;
  char what[sizeof job->what + sizeof job->ifname + 1];
  snprintf(what, sizeof what, "%s %s", job->what, job->ifname);
  berth_settle(env, status, job->deferred, job->work, job->err, what);
  free(job);
}

/* berth_string_prop, with `required` making absence a failure too. */
static int get_string(napi_env env, napi_value obj, const char *key, char *out, size_t size, int required) {
  int got = berth_string_prop(env, obj, key, out, size);
  return got == 0 && required ? -1 : got;
}

/* "a.b.c.d/len" or "x::y/len" into its address and prefix. */
static int parse_cidr(const char *text, int family, void *addr, int *prefix) {
  char buf[64];
  const char *slash = strchr(text, '/');
  if (!slash || (size_t)(slash - text) >= sizeof buf) return -1;
  memcpy(buf, text, (size_t)(slash - text));
  buf[slash - text] = 0;
  char *end;
  long p = strtol(slash + 1, &end, 10);
  if (*end || p < 0 || p > (family == AF_INET ? 32 : 128)) return -1;
  *prefix = (int)p;
  return inet_pton(family, buf, addr) == 1 ? 0 : -1;
}

static napi_value join_veth(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  const char *usage = "joinVeth({ netnsPath, ifname, hostIf, mac, mtu, address, gateway?, address6?, gateway6? })";
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  struct veth_job *job = calloc(1, sizeof *job);
  if (!job) {
    napi_throw_error(env, NULL, "joinVeth: out of memory");
    return NULL;
  }
  char mac[32], address[64], gateway[64], address6[64], gateway6[64];
  int32_t mtu = 0;
  napi_value mtuv;
  int ok = get_string(env, argv[0], "netnsPath", job->netns, sizeof job->netns, 1) > 0 &&
           get_string(env, argv[0], "ifname", job->ifname, sizeof job->ifname, 1) > 0 &&
           get_string(env, argv[0], "hostIf", job->host_if, sizeof job->host_if, 1) > 0 &&
           get_string(env, argv[0], "mac", mac, sizeof mac, 1) > 0 &&
           get_string(env, argv[0], "address", address, sizeof address, 1) > 0 &&
           napi_get_named_property(env, argv[0], "mtu", &mtuv) == napi_ok && napi_get_value_int32(env, mtuv, &mtu) == napi_ok && mtu >= 68 &&
           sscanf(mac, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &job->mac[0], &job->mac[1], &job->mac[2], &job->mac[3], &job->mac[4], &job->mac[5]) == 6 &&
           parse_cidr(address, AF_INET, &job->addr, &job->prefix) == 0;
  int g = ok ? get_string(env, argv[0], "gateway", gateway, sizeof gateway, 0) : -1;
  int a6 = ok && g >= 0 ? get_string(env, argv[0], "address6", address6, sizeof address6, 0) : -1;
  int g6 = a6 >= 0 ? get_string(env, argv[0], "gateway6", gateway6, sizeof gateway6, 0) : -1;
  ok = ok && g >= 0 && a6 >= 0 && g6 >= 0 &&
       (g == 0 || inet_pton(AF_INET, gateway, &job->gw) == 1) &&
       (a6 == 0 || parse_cidr(address6, AF_INET6, &job->addr6, &job->prefix6) == 0) &&
       (g6 == 0 || inet_pton(AF_INET6, gateway6, &job->gw6) == 1);
  if (!ok) {
    free(job);
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  job->mtu = (uint32_t)mtu;
  job->has_gw = g > 0;
  job->has_addr6 = a6 > 0;
  job->has_gw6 = g6 > 0;
  napi_value promise = berth_queue_job(env, "berth-veth", execute, complete, job, &job->deferred, &job->work);
  if (!promise) {
    free(job);
    napi_throw_error(env, NULL, "joinVeth: could not queue the work");
    return NULL;
  }
  return promise;
}

void berth_veth_register(napi_env env, napi_value exports) {
  berth_export(env, exports, "joinVeth", join_veth);
}
