/*
 * berth-dnsfast: the embedded resolver's UDP hot path, off the JavaScript event loop.
 *
 * Measured here under dnsperf, Node's per-datagram machinery (a 64 KiB buffer per receive, a
 * callback into JavaScript, a send request object per reply) cost berthd about 10 us per query and
 * put a 1-1.5 ms p99 on even a trivial Node echo server, where the same echo in C answered at
 * dnsperf's own limit with a p99 of 0.15-0.3 ms. So one thread of berthd's reads every
 * container's resolver UDP socket with recvmmsg, answers what the cache holds with sendmmsg, and
 * hands everything else to JavaScript (a threadsafe function), which answers with the full lookup
 * code, replies through `send`, and stores cacheable answers here through `remember`.
 *
 * The cache holds only answers that depend on the directory of containers (never a forwarded one,
 * never a shuffled list), keyed by the query's bytes after its id, and JavaScript empties it
 * (`clear`) synchronously whenever the directory changes, so a name stops resolving the moment
 * `rm` returns. One mutex guards the sockets and their caches; the thread holds it for one batch.
 * JavaScript owns the descriptors: it calls `remove` before it closes one, so the thread never
 * reads a closed or reused descriptor.
 */
#define _GNU_SOURCE
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
/* DNS queries over UDP are at most a few hundred bytes; anything larger is dropped unread. */
#define MAX_QUERY 4096
#define MAX_REPLY 4096
#define BUCKETS 64
/* A container asks for a handful of names; one spraying distinct queries only churns its own cache. */
#define MAX_ENTRIES 1024
/* Queries waiting for JavaScript; beyond this they are dropped (the client retries, as on any loss). */
#define MAX_PENDING 4096

struct entry {
  struct entry *next;
  uint32_t hash;
  uint16_t klen, rlen;
  uint8_t data[]; /* key (the query after its id), then the whole answer */
};

struct fastsock {
  struct fastsock *next;
  uint32_t id;
  int fd;
  unsigned count;
  uint64_t queries; /* this container's queries, under mu */
  struct entry *buckets[BUCKETS];
};

struct miss {
  uint32_t id;
  int fd;
  uint64_t recv_ns;
  struct sockaddr_in from;
  uint16_t len;
  uint8_t data[];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct fastsock *socks;
static uint32_t next_id = 1;
static int epfd = -1;
static napi_threadsafe_function on_miss;
static volatile int pending;

/*
 * Counters for berthd's /metrics, kept here because the cache answers without JavaScript: queries
 * read, answers sent by response code, queries dropped while JavaScript was behind, and the time
 * from a query's receipt to its answer's send (per batch for cache hits, two vDSO clock reads; for
 * the rest when JavaScript's reply goes out through `send`). Relaxed atomics: each is read alone.
 */
#define NBOUNDS 14
static const uint64_t bounds_ns[NBOUNDS] = {
  10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 25000000, 100000000, 500000000, 2000000000,
};
enum { PATH_CACHE, PATH_RESOLVER, NPATHS };
static uint64_t n_queries, n_dropped, n_rcode[16];
static uint64_t hist[NPATHS][NBOUNDS + 1], hist_sum_ns[NPATHS];

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void observe(int path, uint64_t ns, uint64_t count) {
  int b = 0;
  while (b < NBOUNDS && ns > bounds_ns[b]) b++;
  __atomic_add_fetch(&hist[path][b], count, __ATOMIC_RELAXED);
  __atomic_add_fetch(&hist_sum_ns[path], ns * count, __ATOMIC_RELAXED);
}

static uint32_t fnv1a(const uint8_t *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static struct fastsock *find(uint32_t id) {
  for (struct fastsock *s = socks; s; s = s->next)
    if (s->id == id) return s;
  return NULL;
}

static void clear_cache(struct fastsock *s) {
  for (int b = 0; b < BUCKETS; b++) {
    struct entry *e = s->buckets[b];
    while (e) { struct entry *n = e->next; free(e); e = n; }
    s->buckets[b] = NULL;
  }
  s->count = 0;
}

static struct entry *lookup(struct fastsock *s, const uint8_t *key, size_t klen) {
  uint32_t h = fnv1a(key, klen);
  for (struct entry *e = s->buckets[h % BUCKETS]; e; e = e->next)
    if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0) return e;
  return NULL;
}

static void hand_to_js(struct fastsock *s, const uint8_t *msg, size_t len, const struct sockaddr_in *from, uint64_t recv_ns) {
  if (__atomic_load_n(&pending, __ATOMIC_RELAXED) >= MAX_PENDING) { __atomic_add_fetch(&n_dropped, 1, __ATOMIC_RELAXED); return; }
  struct miss *m = malloc(sizeof *m + len);
  if (!m) { __atomic_add_fetch(&n_dropped, 1, __ATOMIC_RELAXED); return; }
  m->id = s->id;
  m->fd = s->fd;
  m->recv_ns = recv_ns;
  m->from = *from;
  m->len = (uint16_t)len;
  memcpy(m->data, msg, len);
  __atomic_add_fetch(&pending, 1, __ATOMIC_RELAXED);
  if (napi_call_threadsafe_function(on_miss, m, napi_tsfn_nonblocking) != napi_ok) {
    __atomic_sub_fetch(&pending, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&n_dropped, 1, __ATOMIC_RELAXED);
    free(m);
  }
}

static uint8_t inbuf[BATCH][MAX_QUERY];
static uint8_t outbuf[BATCH][MAX_REPLY];

/*
 * At most ROUNDS batches per wakeup, the lock taken per batch: a container flooding its resolver
 * can neither starve the others (epoll is level-triggered, so its socket comes back) nor hold the
 * lock that berthd's JavaScript thread takes to add, remove or clear.
 */
#define ROUNDS 4

static void serve(uint32_t id) {
  struct mmsghdr in[BATCH], out[BATCH];
  struct iovec iin[BATCH], iout[BATCH];
  struct sockaddr_in from[BATCH];
  for (int round = 0; round < ROUNDS; round++) {
    pthread_mutex_lock(&mu);
    struct fastsock *s = find(id);
    if (!s) { pthread_mutex_unlock(&mu); return; }
    memset(in, 0, sizeof in);
    for (int i = 0; i < BATCH; i++) {
      iin[i].iov_base = inbuf[i];
      iin[i].iov_len = MAX_QUERY;
      in[i].msg_hdr.msg_iov = &iin[i];
      in[i].msg_hdr.msg_iovlen = 1;
      in[i].msg_hdr.msg_name = &from[i];
      in[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    int got = recvmmsg(s->fd, in, BATCH, MSG_DONTWAIT, NULL);
    if (got <= 0) { pthread_mutex_unlock(&mu); return; }
    uint64_t t0 = now_ns();
    int n = 0;
    for (int i = 0; i < got; i++) {
      size_t len = in[i].msg_len;
      if (len < 12 || (in[i].msg_hdr.msg_flags & MSG_TRUNC) || in[i].msg_hdr.msg_namelen != sizeof from[i]) continue;
      __atomic_add_fetch(&n_queries, 1, __ATOMIC_RELAXED);
      s->queries++;
      struct entry *e = lookup(s, inbuf[i] + 2, len - 2);
      if (!e) { hand_to_js(s, inbuf[i], len, &from[i], t0); continue; }
      __atomic_add_fetch(&n_rcode[e->data[e->klen + 3] & 0x0f], 1, __ATOMIC_RELAXED);
      memcpy(outbuf[n], e->data + e->klen, e->rlen);
      outbuf[n][0] = inbuf[i][0];
      outbuf[n][1] = inbuf[i][1];
      iout[n].iov_base = outbuf[n];
      iout[n].iov_len = e->rlen;
      memset(&out[n], 0, sizeof out[n]);
      out[n].msg_hdr.msg_iov = &iout[n];
      out[n].msg_hdr.msg_iovlen = 1;
      out[n].msg_hdr.msg_name = &from[i];
      out[n].msg_hdr.msg_namelen = sizeof from[i];
      n++;
    }
    /* A reply the kernel cannot take now is dropped, as a full socket buffer drops any datagram. */
    for (int sent = 0; sent < n;) {
      int r = sendmmsg(s->fd, out + sent, n - sent, MSG_DONTWAIT);
      if (r <= 0) { if (r < 0 && errno == EINTR) continue; sent++; continue; }
      sent += r;
    }
    if (n) observe(PATH_CACHE, now_ns() - t0, (uint64_t)n);
    pthread_mutex_unlock(&mu);
    if (got < BATCH) return;
  }
}

static void *loop(void *arg) {
  (void)arg;
  struct epoll_event ev[16];
  for (;;) {
    int n = epoll_wait(epfd, ev, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return NULL;
    }
    for (int i = 0; i < n; i++) serve(ev[i].data.u32);
  }
}

static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  (void)context;
  struct miss *m = data;
  __atomic_sub_fetch(&pending, 1, __ATOMIC_RELAXED);
  if (env && cb) {
    char addr[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &m->from.sin_addr, addr, sizeof addr);
    napi_value argv[5], undef, buf;
    void *copy;
    if (napi_create_uint32(env, m->id, &argv[0]) == napi_ok &&
        napi_create_buffer_copy(env, m->len, m->data, &copy, &buf) == napi_ok &&
        napi_create_string_utf8(env, addr, NAPI_AUTO_LENGTH, &argv[2]) == napi_ok &&
        napi_create_uint32(env, ntohs(m->from.sin_port), &argv[3]) == napi_ok &&
        napi_create_double(env, (double)m->recv_ns, &argv[4]) == napi_ok &&
        napi_get_undefined(env, &undef) == napi_ok) {
      argv[1] = buf;
      napi_call_function(env, undef, cb, 5, argv, NULL);
    }
  }
  free(m);
}

static napi_value throw_msg(napi_env env, const char *msg) {
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  return napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= want;
}

/* start(onMiss: (id, query, address, port) => void): once per process. */
static napi_value start(napi_env env, napi_callback_info info) {
  napi_value argv[1], name;
  if (!get_args(env, info, 1, argv)) return throw_msg(env, "start(onMiss)");
  if (epfd >= 0) return throw_msg(env, "dnsfast: already started");
  if (napi_create_string_utf8(env, "berth-dnsfast", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &on_miss) != napi_ok)
    return throw_msg(env, "dnsfast: cannot create the callback");
  /* The thread must never keep berthd alive on its own. */
  napi_unref_threadsafe_function(env, on_miss);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return throw_msg(env, "dnsfast: epoll_create1 failed");
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int err = pthread_create(&t, &attr, loop, NULL);
  pthread_attr_destroy(&attr);
  if (err) return throw_msg(env, "dnsfast: cannot start the thread");
  return NULL;
}

/* add(fd): serves a bound UDP socket; returns its id. */
static napi_value add(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int32_t fd;
  if (!get_args(env, info, 1, argv) || napi_get_value_int32(env, argv[0], &fd) != napi_ok) return throw_msg(env, "add(fd)");
  if (epfd < 0) return throw_msg(env, "dnsfast: not started");
  struct fastsock *s = calloc(1, sizeof *s);
  if (!s) return throw_msg(env, "dnsfast: out of memory");
  pthread_mutex_lock(&mu);
  s->id = next_id++;
  s->fd = fd;
  struct epoll_event ev = { .events = EPOLLIN, .data.u32 = s->id };
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    pthread_mutex_unlock(&mu);
    free(s);
    return throw_msg(env, "dnsfast: epoll_ctl failed");
  }
  s->next = socks;
  socks = s;
  uint32_t id = s->id;
  pthread_mutex_unlock(&mu);
  napi_create_uint32(env, id, &out);
  return out;
}

/* remove(id): stops serving a socket (the caller closes the descriptor afterwards). */
static napi_value remove_sock(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint32_t id;
  if (!get_args(env, info, 1, argv) || napi_get_value_uint32(env, argv[0], &id) != napi_ok) return throw_msg(env, "remove(id)");
  pthread_mutex_lock(&mu);
  for (struct fastsock **p = &socks; *p; p = &(*p)->next) {
    if ((*p)->id != id) continue;
    struct fastsock *s = *p;
    *p = s->next;
    epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
    clear_cache(s);
    free(s);
    break;
  }
  pthread_mutex_unlock(&mu);
  return NULL;
}

/* remember(id, query, answer): caches an answer for the query's bytes after its id. */
static napi_value remember(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t id;
  uint8_t *q, *a;
  size_t qlen, alen;
  if (!get_args(env, info, 3, argv) || napi_get_value_uint32(env, argv[0], &id) != napi_ok ||
      napi_get_buffer_info(env, argv[1], (void **)&q, &qlen) != napi_ok ||
      napi_get_buffer_info(env, argv[2], (void **)&a, &alen) != napi_ok)
    return throw_msg(env, "remember(id, query, answer)");
  if (qlen < 12 || qlen > MAX_QUERY || alen < 12 || alen > MAX_REPLY) return NULL;
  size_t klen = qlen - 2;
  struct entry *e = malloc(sizeof *e + klen + alen);
  if (!e) return NULL;
  e->hash = fnv1a(q + 2, klen);
  e->klen = (uint16_t)klen;
  e->rlen = (uint16_t)alen;
  memcpy(e->data, q + 2, klen);
  memcpy(e->data + klen, a, alen);
  pthread_mutex_lock(&mu);
  struct fastsock *s = find(id);
  if (!s || lookup(s, q + 2, klen)) {
    free(e);
  } else {
    if (s->count >= MAX_ENTRIES) clear_cache(s);
    e->next = s->buckets[e->hash % BUCKETS];
    s->buckets[e->hash % BUCKETS] = e;
    s->count++;
  }
  pthread_mutex_unlock(&mu);
  return NULL;
}

/* clear([ids]): forgets the cached answers of these sockets, or of all when ids is absent or undefined. */
static napi_value clear(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value list;
  bool is_array = false;
  if (napi_get_cb_info(env, info, &argc, &list, NULL, NULL) != napi_ok) return throw_msg(env, "clear([ids])");
  napi_valuetype type = napi_undefined;
  if (argc >= 1 && napi_typeof(env, list, &type) != napi_ok) return throw_msg(env, "clear([ids])");
  if (type != napi_undefined && (napi_is_array(env, list, &is_array) != napi_ok || !is_array)) return throw_msg(env, "clear([ids])");
  uint32_t n = 0;
  if (is_array && napi_get_array_length(env, list, &n) != napi_ok) return throw_msg(env, "clear([ids])");
  uint32_t ids[256];
  if (n > sizeof ids / sizeof ids[0]) is_array = false; /* a long list: clearing all is as good */
  for (uint32_t i = 0; is_array && i < n; i++) {
    napi_value v;
    if (napi_get_element(env, list, i, &v) != napi_ok || napi_get_value_uint32(env, v, &ids[i]) != napi_ok) return throw_msg(env, "clear([ids])");
  }
  pthread_mutex_lock(&mu);
  if (!is_array) {
    for (struct fastsock *s = socks; s; s = s->next) clear_cache(s);
  } else {
    for (uint32_t i = 0; i < n; i++) {
      struct fastsock *s = find(ids[i]);
      if (s) clear_cache(s);
    }
  }
  pthread_mutex_unlock(&mu);
  return NULL;
}

/*
 * send(fd, answer, address, port[, recvNs]): a reply from JavaScript; false when the kernel refused
 * it. With the query's receipt time (as onMiss gave it) the reply is counted and timed.
 */
static napi_value send_reply(napi_env env, napi_callback_info info) {
  napi_value argv[5], out;
  int32_t fd;
  uint32_t port;
  uint8_t *a;
  size_t alen, n;
  char addr[64];
  struct sockaddr_in to = { .sin_family = AF_INET };
  if (!get_args(env, info, 4, argv) || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], (void **)&a, &alen) != napi_ok ||
      napi_get_value_string_utf8(env, argv[2], addr, sizeof addr, &n) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &port) != napi_ok || port > 65535 || inet_pton(AF_INET, addr, &to.sin_addr) != 1)
    return throw_msg(env, "send(fd, answer, address, port)");
  to.sin_port = htons((uint16_t)port);
  ssize_t r = sendto(fd, a, alen, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof to);
  size_t argc = 5;
  double recv_ns;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 5 &&
      napi_get_value_double(env, argv[4], &recv_ns) == napi_ok && recv_ns > 0) {
    uint64_t t = now_ns();
    if (alen >= 4) __atomic_add_fetch(&n_rcode[a[3] & 0x0f], 1, __ATOMIC_RELAXED);
    observe(PATH_RESOLVER, t > (uint64_t)recv_ns ? t - (uint64_t)recv_ns : 0, 1);
  }
  napi_get_boolean(env, r == (ssize_t)alen, &out);
  return out;
}

/* observe(seconds): a TCP answer's time, which the event loop measures, into the resolver's histogram. */
static napi_value observe_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  double sec;
  if (!get_args(env, info, 1, argv) || napi_get_value_double(env, argv[0], &sec) != napi_ok) return throw_msg(env, "observe(seconds)");
  if (sec >= 0) observe(PATH_RESOLVER, (uint64_t)(sec * 1e9), 1);
  return NULL;
}

static napi_value u64_array(napi_env env, const uint64_t *v, size_t n) {
  napi_value arr, x;
  napi_create_array_with_length(env, n, &arr);
  for (size_t i = 0; i < n; i++) {
    napi_create_double(env, (double)__atomic_load_n(&v[i], __ATOMIC_RELAXED), &x);
    napi_set_element(env, arr, (uint32_t)i, x);
  }
  return arr;
}

/*
 * stats(): { queries, dropped, rcodes[16], bounds[] (seconds), cache: { buckets[], sumSeconds },
 * resolver: { buckets[], sumSeconds } }; buckets are per bound (not cumulative), the last above all.
 */
static napi_value stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, x, arr;
  napi_create_object(env, &out);
  napi_create_double(env, (double)__atomic_load_n(&n_queries, __ATOMIC_RELAXED), &x);
  napi_set_named_property(env, out, "queries", x);
  napi_create_double(env, (double)__atomic_load_n(&n_dropped, __ATOMIC_RELAXED), &x);
  napi_set_named_property(env, out, "dropped", x);
  napi_set_named_property(env, out, "rcodes", u64_array(env, n_rcode, 16));
  napi_create_array_with_length(env, NBOUNDS, &arr);
  for (uint32_t i = 0; i < NBOUNDS; i++) {
    napi_create_double(env, (double)bounds_ns[i] / 1e9, &x);
    napi_set_element(env, arr, i, x);
  }
  napi_set_named_property(env, out, "bounds", arr);
  const char *names[NPATHS] = { "cache", "resolver" };
  for (int p = 0; p < NPATHS; p++) {
    napi_value h;
    napi_create_object(env, &h);
    napi_set_named_property(env, h, "buckets", u64_array(env, hist[p], NBOUNDS + 1));
    napi_create_double(env, (double)__atomic_load_n(&hist_sum_ns[p], __ATOMIC_RELAXED) / 1e9, &x);
    napi_set_named_property(env, h, "sumSeconds", x);
    napi_set_named_property(env, out, names[p], h);
  }
  return out;
}

/* perSocket(): [[id, queries], ...] for every socket served now (one per running container). */
static napi_value per_socket(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value arr, pair, x;
  napi_create_array(env, &arr);
  uint32_t i = 0;
  pthread_mutex_lock(&mu);
  for (struct fastsock *s = socks; s; s = s->next, i++) {
    napi_create_array_with_length(env, 2, &pair);
    napi_create_uint32(env, s->id, &x);
    napi_set_element(env, pair, 0, x);
    napi_create_double(env, (double)s->queries, &x);
    napi_set_element(env, pair, 1, x);
    napi_set_element(env, arr, i, pair);
  }
  pthread_mutex_unlock(&mu);
  return arr;
}

void berth_dnsfast_register(napi_env env, napi_value exports) {
  struct { const char *name; napi_callback cb; } fns[] = {
    { "start", start }, { "add", add }, { "remove", remove_sock }, { "remember", remember }, { "clear", clear }, { "send", send_reply }, { "stats", stats }, { "perSocket", per_socket }, { "observe", observe_js },
  };
  napi_value obj, fn;
  if (napi_create_object(env, &obj) != napi_ok) return;
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn) == napi_ok) napi_set_named_property(env, obj, fns[i].name, fn);
  }
  napi_set_named_property(env, exports, "dnsfast", obj);
}
