/*
 * berth-peers: an overlay network's remote endpoints written to its VXLAN device over rtnetlink,
 * without a `bridge` and an `ip` process (starting both was most of what every host did for each
 * endpoint that came or went on another host, and grew with the host's load).
 *
 *   programPeers(dev, [{ op, mac, ip?, vtep? }], tolerant) -> Promise<void>
 *
 * op is one of
 *   "fdb-replace"    as `bridge fdb replace MAC dev DEV dst VTEP self permanent`
 *   "fdb-delete"     as `bridge fdb del MAC dev DEV dst VTEP self`
 *   "neigh-replace"  as `ip neigh replace IP lladdr MAC dev DEV nud permanent`
 *   "neigh-delete"   as `ip neigh del IP dev DEV`
 * applied in the order given, each acknowledged. The first failure stops the rest and is reported
 * as "<op> <ip or mac> dev <dev>: <reason>"; with `tolerant`, an entry already gone is no failure
 * (a delete of what a crash or the kernel removed), as `bridge -force` / `ip -force` had it.
 *
 * Runs on a libuv worker thread: those stay in berthd's namespace, which holds the device.
 */
#define _GNU_SOURCE
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if.h>
#include <linux/if_bridge.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "berth-napi.h"
#include "berth-nl.h"

extern unsigned int if_nametoindex(const char *ifname);

enum peer_op { FDB_REPLACE, FDB_DELETE, NEIGH_REPLACE, NEIGH_DELETE };
static const char *const OP_NAMES[] = { "fdb-replace", "fdb-delete", "neigh-replace", "neigh-delete" };

struct peer_entry {
  enum peer_op op;
  unsigned char mac[6];
  struct in_addr ip, vtep;
};

struct peers_job {
  char dev[IFNAMSIZ];
  int tolerant;
  size_t count;
  struct peer_entry *entries;
  /* Result. */
  int err;
  char what[96];
  napi_async_work work;
  napi_deferred deferred;
};

static void describe(struct peers_job *job, const struct peer_entry *e) {
  char addr[32] = "";
  if (e->op == NEIGH_REPLACE || e->op == NEIGH_DELETE) inet_ntop(AF_INET, &e->ip, addr, sizeof addr);
  else snprintf(addr, sizeof addr, "%02x:%02x:%02x:%02x:%02x:%02x", e->mac[0], e->mac[1], e->mac[2], e->mac[3], e->mac[4], e->mac[5]);
  snprintf(job->what, sizeof job->what, "%s %s dev %s", OP_NAMES[e->op], addr, job->dev);
}

static void execute(napi_env env, void *data) {
  (void)env;
  struct peers_job *job = data;
  unsigned idx = if_nametoindex(job->dev);
  if (!idx) {
    job->err = errno ? errno : ENODEV;
    snprintf(job->what, sizeof job->what, "device %s", job->dev);
    return;
  }
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    job->err = errno;
    snprintf(job->what, sizeof job->what, "netlink socket");
    return;
  }
  for (size_t i = 0; i < job->count; i++) {
    const struct peer_entry *e = &job->entries[i];
    _Alignas(struct nlmsghdr) char req[256];
    memset(req, 0, sizeof req);
    struct nlmsghdr *n = (struct nlmsghdr *)req;
    int replace = e->op == FDB_REPLACE || e->op == NEIGH_REPLACE;
    int fdb = e->op == FDB_REPLACE || e->op == FDB_DELETE;
    n->nlmsg_len = NLMSG_LENGTH(sizeof(struct ndmsg));
    n->nlmsg_type = replace ? RTM_NEWNEIGH : RTM_DELNEIGH;
    n->nlmsg_flags = replace ? NLM_F_CREATE | NLM_F_REPLACE : 0;
    struct ndmsg *nd = NLMSG_DATA(n);
    nd->ndm_ifindex = (int)idx;
    if (fdb) {
      nd->ndm_family = AF_BRIDGE;
      nd->ndm_flags = NTF_SELF;
      nd->ndm_state = NUD_PERMANENT;
      add_attr(n, NDA_LLADDR, e->mac, 6);
      add_attr(n, NDA_DST, &e->vtep, sizeof e->vtep);
    } else {
      nd->ndm_family = AF_INET;
      nd->ndm_state = replace ? NUD_PERMANENT : 0;
      add_attr(n, NDA_DST, &e->ip, sizeof e->ip);
      if (replace) add_attr(n, NDA_LLADDR, e->mac, 6);
    }
    int err = talk(fd, n, (uint32_t)i + 1);
    if (err && !(job->tolerant && !replace && err == ENOENT)) {
      job->err = err;
      describe(job, e);
      break;
    }
  }
  close(fd);
}

static void complete(napi_env env, napi_status status, void *data) {
  struct peers_job *job = data;
  berth_settle(env, status, job->deferred, job->work, job->err, job->what[0] ? job->what : "programPeers");
  free(job->entries);
  free(job);
}

static int parse_entry(napi_env env, napi_value obj, struct peer_entry *e) {
  char op[32], mac[32], ip[INET_ADDRSTRLEN], vtep[INET_ADDRSTRLEN];
  if (berth_string_prop(env, obj, "op", op, sizeof op) != 1 || berth_string_prop(env, obj, "mac", mac, sizeof mac) != 1) return -1;
  int found = 0;
  for (int k = 0; k < 4; k++) {
    if (strcmp(op, OP_NAMES[k]) == 0) { e->op = (enum peer_op)k; found = 1; }
  }
  if (!found || sscanf(mac, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &e->mac[0], &e->mac[1], &e->mac[2], &e->mac[3], &e->mac[4], &e->mac[5]) != 6) return -1;
  if (e->op == FDB_REPLACE || e->op == FDB_DELETE) {
    return berth_string_prop(env, obj, "vtep", vtep, sizeof vtep) == 1 && inet_pton(AF_INET, vtep, &e->vtep) == 1 ? 0 : -1;
  }
  return berth_string_prop(env, obj, "ip", ip, sizeof ip) == 1 && inet_pton(AF_INET, ip, &e->ip) == 1 ? 0 : -1;
}

static napi_value program_peers(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  const char *usage = "programPeers(dev, [{ op, mac, ip?, vtep? }], tolerant)";
  bool is_array = false, tolerant = false;
  uint32_t count = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &count) != napi_ok || napi_get_value_bool(env, argv[2], &tolerant) != napi_ok) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  struct peers_job *job = calloc(1, sizeof *job);
  struct peer_entry *entries = calloc(count ? count : 1, sizeof *entries);
  /* One byte more than a name can hold: a longer name shows as one that filled it. */
  char dev[IFNAMSIZ + 1];
  size_t n = 0;
  int ok = job && entries && napi_get_value_string_utf8(env, argv[0], dev, sizeof dev, &n) == napi_ok && n > 0 && n < IFNAMSIZ;
  if (ok) memcpy(job->dev, dev, n + 1);
  for (uint32_t i = 0; ok && i < count; i++) {
    napi_value item;
    ok = napi_get_element(env, argv[1], i, &item) == napi_ok && parse_entry(env, item, &entries[i]) == 0;
  }
  if (!ok) {
    free(entries);
    free(job);
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  job->entries = entries;
  job->count = count;
  job->tolerant = tolerant;
  napi_value promise = berth_queue_job(env, "berth-peers", execute, complete, job, &job->deferred, &job->work);
  if (!promise) {
    free(entries);
    free(job);
    napi_throw_error(env, NULL, "programPeers: could not queue the work");
    return NULL;
  }
  return promise;
}

void berth_peers_register(napi_env env, napi_value exports) {
  berth_export(env, exports, "programPeers", program_peers);
}
