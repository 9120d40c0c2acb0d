/*
 * berth-nftsetin: a service balancer's change inside a sandbox, from berthd itself.
 *
 *   nftsetIn(netnsPath, table, args: string[]) -> Promise<Array<{ set, key, packets }>>
 *
 * args are berth-nftset's (`+SET/KEY[:DATA]`, `-SET/KEY`, `~SET/KEY`, `=CHAIN`, `>CHAIN/KEY/N`, see berth-nftset-core.h);
 * netnsPath '' is berthd's own namespace. The promise resolves to the elements that `~`
 * arguments deleted, each with its key in hex and its counter's packets as the commit left them;
 * it rejects with the failing argument and the kernel's reason, and the kernel then undid the
 * whole transaction.
 *
 * Why: a balancer's change was a berth-nftset process started in the sandbox, 3-10 ms on a quiet
 * machine and 50 ms and more while containers and clients load both cores, for a transaction
 * that takes the kernel well under a millisecond; a task's arrival on every node waited for it.
 * A socket belongs for life to the namespace it was made in, so a short-lived thread enters the
 * sandbox to make it (no thread of berthd's ever leaves berthd's namespace), and the transaction
 * runs on a libuv worker. The socket is closed by a detached thread: closing waits for an RCU
 * grace period after a transaction that replaced anything (5-16 ms here). None is kept, so no
 * sandbox is held alive by berthd after its container goes.
 */
#define _GNU_SOURCE
#include <node_api.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "berth-napi.h"
#include "berth-nftset-core.h"

int berth_enter_netns(const char *path);

struct nftsetin_job {
  char path[4096];
  char table[256];
  int n;
  char **args;
  int fd;
  int failed;
  struct nftset_gone *gone;
  int gone_count;
  /* Room for the path in an error about it. */
  char err[4608];
  napi_async_work work;
  napi_deferred deferred;
};

static void *socket_in_netns(void *arg) {
  struct nftsetin_job *job = arg;
  int e = berth_enter_netns(job->path);
  if (e) {
    snprintf(job->err, sizeof job->err, "%s: %s", job->path, strerror(e));
    return NULL;
  }
  job->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (job->fd < 0) snprintf(job->err, sizeof job->err, "netfilter netlink socket: %s", strerror(errno));
  return NULL;
}

static void free_job(struct nftsetin_job *job) {
  for (int i = 0; i < job->n; i++) free(job->args[i]);
  free(job->args);
  free(job->gone);
  free(job);
}

static void *close_socket(void *arg) {
  close((int)(intptr_t)arg);
  return NULL;
}

static void execute(napi_env env, void *data) {
  (void)env;
  struct nftsetin_job *job = data;
  const char *const *args = (const char *const *)job->args;
  struct nftset_batch t;
  job->failed = 1;
  if (nftset_build(&t, job->table, job->n, args, job->err, sizeof job->err) != 0) return;
  job->fd = -1;
  if (job->path[0]) {
    pthread_t th;
    int e = pthread_create(&th, NULL, socket_in_netns, job);
    if (e) snprintf(job->err, sizeof job->err, "thread: %s", strerror(e));
    else pthread_join(th, NULL);
  } else {
    job->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (job->fd < 0) snprintf(job->err, sizeof job->err, "netfilter netlink socket: %s", strerror(errno));
  }
  if (job->fd >= 0) {
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(job->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    job->failed = nftset_exchange(job->fd, &t, job->table, args, job->err, sizeof job->err);
    job->gone = t.gone;
    job->gone_count = t.gone_count;
    t.gone = NULL;
    pthread_attr_t attr;
    pthread_t closer;
    int detached = pthread_attr_init(&attr) == 0 && pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
                   pthread_create(&closer, &attr, close_socket, (void *)(intptr_t)job->fd) == 0;
    if (!detached) close(job->fd);
    pthread_attr_destroy(&attr);
  }
  nftset_free(&t);
}

static void complete(napi_env env, napi_status status, void *data) {
  struct nftsetin_job *job = data;
  if (status == napi_ok && !job->failed) {
    napi_value list;
    napi_create_array_with_length(env, (size_t)job->gone_count, &list);
    for (int i = 0; i < job->gone_count; i++) {
      const struct nftset_gone *g = &job->gone[i];
      char hex[2 * sizeof g->key + 1];
      nftset_hex(g->key, g->klen, hex);
      napi_value item, set, key, packets;
      napi_create_object(env, &item);
      napi_create_string_utf8(env, g->set, NAPI_AUTO_LENGTH, &set);
      napi_create_string_utf8(env, hex, NAPI_AUTO_LENGTH, &key);
      napi_create_double(env, (double)g->packets, &packets);
      napi_set_named_property(env, item, "set", set);
      napi_set_named_property(env, item, "key", key);
      napi_set_named_property(env, item, "packets", packets);
      napi_set_element(env, list, (uint32_t)i, item);
    }
    napi_resolve_deferred(env, job->deferred, list);
  } else {
    napi_value text, error;
    napi_create_string_utf8(env, job->err[0] ? job->err : "nftsetIn failed", NAPI_AUTO_LENGTH, &text);
    napi_create_error(env, NULL, text, &error);
    napi_reject_deferred(env, job->deferred, error);
  }
  napi_delete_async_work(env, job->work);
  free_job(job);
}

static napi_value nftset_in(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  const char *usage = "nftsetIn(netnsPath: string, table: string, args: string[])";
  bool is_array = false;
  uint32_t count = 0;
  size_t n = 0;
  struct nftsetin_job *job = calloc(1, sizeof *job);
  int ok = job && napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 3 &&
           napi_get_value_string_utf8(env, argv[0], job->path, sizeof job->path, &n) == napi_ok && n < sizeof job->path - 1 &&
           napi_get_value_string_utf8(env, argv[1], job->table, sizeof job->table, &n) == napi_ok && n > 0 && n < sizeof job->table - 1 &&
           napi_is_array(env, argv[2], &is_array) == napi_ok && is_array &&
           napi_get_array_length(env, argv[2], &count) == napi_ok && count > 0;
  if (ok) ok = (job->args = calloc(count, sizeof *job->args)) != NULL;
  for (uint32_t i = 0; ok && i < count; i++) {
    napi_value item;
    size_t len = 0;
    ok = napi_get_element(env, argv[2], i, &item) == napi_ok && napi_get_value_string_utf8(env, item, NULL, 0, &len) == napi_ok && len > 0 && len < 1024 &&
         (job->args[i] = malloc(len + 1)) != NULL && napi_get_value_string_utf8(env, item, job->args[i], len + 1, &len) == napi_ok;
    if (ok) job->n = (int)i + 1;
  }
  napi_value promise = ok ? berth_queue_job(env, "berth-nftsetin", execute, complete, job, &job->deferred, &job->work) : NULL;
  if (!promise) {
    if (job) free_job(job);
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  return promise;
}

void berth_nftsetin_register(napi_env env, napi_value exports) {
  berth_export(env, exports, "nftsetIn", nftset_in);
}
