/*
 * berth-nftelems: elements of berthd's own nftables sets added and deleted over netlink, in one
 * transaction, without `nft`.
 *
 *   setElements(family, table, [{ op: "add" | "delete", set, key: Buffer }]) -> Promise<void>
 *
 * family is "ip", "ip6", "inet", "bridge" or "netdev"; key holds the element's bytes as the kernel stores
 * them (a concatenation's parts each padded to 4 bytes; src/kernel/nftelements.ts encodes them).
 * An add of an element already there is no failure (as `nft add element`); a delete of one that
 * is not there fails the whole transaction (as `nft delete element`), reported as
 * "<op> <set> <key in hex>: <reason>".
 *
 * Why: every element change the source guard made went through berthd's long-lived `nft`, which
 * parses the command and brings its cache up to date with the kernel before it; on an overlay
 * host that programs a remote endpoint that was most of the host's apply step (7 ms quiet, 35-130
 * ms while containers started), and each host's step is part of every `run` and `connect`.
 *
 * Runs on a libuv worker thread: those stay in berthd's namespace, which holds the tables.
 */
#define _GNU_SOURCE
#include <node_api.h>

#include <errno.h>
#include <pthread.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "berth-napi.h"
#include "berth-nfnl.h"

#define KEY_MAX 64
#define NAME_MAX_LEN 64

struct elem_op {
  int add;
  char set[NAME_MAX_LEN];
  unsigned char key[KEY_MAX];
  size_t key_len;
};

struct elems_job {
  unsigned char family;
  char table[NAME_MAX_LEN];
  size_t count;
  struct elem_op *ops;
  /* Result. */
  int err;
  char what[256];
  napi_async_work work;
  napi_deferred deferred;
};

static void describe(struct elems_job *job, const struct elem_op *o, int err) {
  char hex[2 * KEY_MAX + 1];
  for (size_t i = 0; i < o->key_len; i++) snprintf(hex + 2 * i, 3, "%02x", o->key[i]);
  hex[2 * o->key_len] = 0;
  snprintf(job->what, sizeof job->what, "%s %s %s", o->add ? "add" : "delete", o->set, hex);
  job->err = err;
}

/*
 * One socket for the process, kept open: closing a netfilter socket after a transaction that
 * deleted elements waits for an RCU grace period (8-16 ms here), and a socket closed by another
 * thread only made the next transaction wait for it instead. Transactions take turns on it; the
 * kernel answers a batch while it is sent, so each turn reads every answer of its own batch
 * before the next one sends.
 */
static int shared_fd = -1;
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;

static int open_socket(void) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return -1;
  struct timeval tv = { .tv_sec = 10 };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static void execute(napi_env env, void *data) {
  (void)env;
  struct elems_job *job = data;
  /* Each element message is well under 256 bytes with its names and key. */
  struct nfnl_buf b = { .data = calloc(job->count + 2, 256) };
  if (!b.data) {
    job->err = ENOMEM;
    snprintf(job->what, sizeof job->what, "setElements");
    return;
  }
  uint32_t seq = 1;
  nfnl_batch_mark(&b, NFNL_MSG_BATCH_BEGIN, seq++);
  for (size_t i = 0; i < job->count; i++) {
    const struct elem_op *o = &job->ops[i];
    nfnl_set_elem(&b, o->add, o->add ? NLM_F_CREATE : 0, job->family, job->table, o->set, o->key, o->key_len, NULL, 0, NULL, seq++);
  }
  nfnl_batch_mark(&b, NFNL_MSG_BATCH_END, seq++);

  pthread_mutex_lock(&shared_lock);
  if (shared_fd < 0) shared_fd = open_socket();
  int fd = shared_fd;
  if (fd < 0) {
    job->err = errno;
    snprintf(job->what, sizeof job->what, "netfilter netlink socket");
    pthread_mutex_unlock(&shared_lock);
    free(b.data);
    return;
  }
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  if (sendto(fd, b.data, b.used, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
    job->err = errno;
    snprintf(job->what, sizeof job->what, "netfilter netlink send");
  }
  free(b.data);
  /*
   * One answer per element (an acknowledgement or its error) when the batch commits; a failed
   * batch may answer only its failures, so after one the rest is drained without waiting.
   */
  size_t answered = 0;
  int broken = job->err != 0;
  _Alignas(struct nlmsghdr) char rbuf[16384];
  while (!broken) {
    int drain = answered >= job->count || job->err;
    ssize_t got = recv(fd, rbuf, sizeof rbuf, drain ? MSG_DONTWAIT : 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      if (drain && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      job->err = errno;
      snprintf(job->what, sizeof job->what, "netfilter netlink receive");
      broken = 1;
      break;
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)rbuf; NLMSG_OK(h, (size_t)got); h = NLMSG_NEXT(h, got)) {
      if (h->nlmsg_type != NLMSG_ERROR) continue;
      const struct nlmsgerr *e = NLMSG_DATA(h);
      answered++;
      size_t idx = e->msg.nlmsg_seq >= 2 ? e->msg.nlmsg_seq - 2 : job->count;
      if (e->error < 0 && !job->err) {
        if (idx < job->count) describe(job, &job->ops[idx], -e->error);
        else { job->err = -e->error; snprintf(job->what, sizeof job->what, "setElements batch"); }
      }
    }
  }
  /* A socket whose answers went astray is not used again: the next turn opens another. */
  if (broken) {
    close(fd);
    shared_fd = -1;
  }
  pthread_mutex_unlock(&shared_lock);
}

static void complete(napi_env env, napi_status status, void *data) {
  struct elems_job *job = data;
  berth_settle(env, status, job->deferred, job->work, job->err, job->what[0] ? job->what : "setElements");
  free(job->ops);
  free(job);
}

static int parse_op(napi_env env, napi_value obj, struct elem_op *o) {
  char op[16];
  napi_value key;
  bool is_buffer = false, has = false;
  void *bytes = NULL;
  size_t len = 0;
  if (berth_string_prop(env, obj, "op", op, sizeof op) != 1 || berth_string_prop(env, obj, "set", o->set, sizeof o->set) != 1) return -1;
  if (strcmp(op, "add") == 0) o->add = 1;
  else if (strcmp(op, "delete") == 0) o->add = 0;
  else return -1;
  if (napi_has_named_property(env, obj, "key", &has) != napi_ok || !has ||
      napi_get_named_property(env, obj, "key", &key) != napi_ok ||
      napi_is_buffer(env, key, &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, key, &bytes, &len) != napi_ok || len == 0 || len > KEY_MAX) return -1;
  memcpy(o->key, bytes, len);
  o->key_len = len;
  return 0;
}

static int family_of(const char *name) {
  if (strcmp(name, "ip") == 0) return NFPROTO_IPV4;
  if (strcmp(name, "ip6") == 0) return NFPROTO_IPV6;
  if (strcmp(name, "inet") == 0) return NFPROTO_INET;
  if (strcmp(name, "bridge") == 0) return NFPROTO_BRIDGE;
  if (strcmp(name, "netdev") == 0) return NFPROTO_NETDEV;
  return -1;
}

static napi_value set_elements(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  const char *usage = "setElements(family, table, [{ op: 'add' | 'delete', set, key: Buffer }])";
  bool is_array = false;
  uint32_t count = 0;
  char family[16];
  size_t n = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_string_utf8(env, argv[0], family, sizeof family, &n) != napi_ok || family_of(family) < 0 ||
      napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[2], &count) != napi_ok || count == 0) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  struct elems_job *job = calloc(1, sizeof *job);
  struct elem_op *ops = calloc(count, sizeof *ops);
  /* One byte more than a name can hold: a longer name shows as one that filled it. */
  char table[NAME_MAX_LEN + 1];
  int ok = job && ops && napi_get_value_string_utf8(env, argv[1], table, sizeof table, &n) == napi_ok && n > 0 && n < NAME_MAX_LEN;
  if (ok) {
    memcpy(job->table, table, n + 1);
    job->family = (unsigned char)family_of(family);
  }
  for (uint32_t i = 0; ok && i < count; i++) {
    napi_value item;
    ok = napi_get_element(env, argv[2], i, &item) == napi_ok && parse_op(env, item, &ops[i]) == 0;
  }
  if (!ok) {
    free(ops);
    free(job);
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  job->ops = ops;
  job->count = count;
  napi_value promise = berth_queue_job(env, "berth-nftelems", execute, complete, job, &job->deferred, &job->work);
  if (!promise) {
    free(ops);
    free(job);
    napi_throw_error(env, NULL, "setElements: could not queue the work");
    return NULL;
  }
  return promise;
}

void berth_nftelems_register(napi_env env, napi_value exports) {
  berth_export(env, exports, "setElements", set_elements);
}
