/*
 * What berth-nftset does, shared by the program (run inside a sandbox) and the addon's nftsetIn
 * (berthd's own thread, on a socket made inside the sandbox): a batch of a balancer's element
 * and dispatch-rule changes, given as berth-nftset's arguments, sent on a netfilter socket in one
 * transaction, every answer read.
 *
 *   +SET/KEY[:DATA]   add an element (KEY and DATA in hex, the bytes the kernel stores)
 *   +SET/KEY:@CHAIN   add a verdict map's element: KEY → goto CHAIN
 *   *CHAIN            add a chain (there already is fine)
 *   !CHAIN            delete a chain (its rules and the elements that go to it gone first)
 *   -SET/KEY          delete an element
 *   ~SET/KEY          delete an element and report its counter's packets as the commit left them
 *   =CHAIN            flush a bucket chain (its rules are added again after it)
 *   >CHAIN/KEY/N      append a key's rule to a bucket chain: its match, and the dispatch over N backends
 */
#ifndef BERTH_NFTSET_CORE_H
#define BERTH_NFTSET_CORE_H

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "berth-nfnl.h"

/* An element a `~` argument deleted: its set, its key's bytes, its counter's packets when it went. */
struct nftset_gone {
  char set[64];
  unsigned char key[64];
  int klen;
  uint64_t packets;
};

/* A batch being built, the argument each of its messages came from (index + 1), and what its `~` deletions reported. */
struct nftset_batch {
  struct nfnl_buf b;
  int *arg_of;
  unsigned seq;
  int count;
  struct nftset_gone *gone;
  int echoed;
  int gone_count;
};

static inline int nftset_unhex(const char *s, size_t len, unsigned char *out) {
  if (len % 2 || len / 2 > 64) return -1;
  for (size_t i = 0; i < len; i += 2) {
    unsigned v;
    if (sscanf(s + i, "%2x", &v) != 1) return -1;
    out[i / 2] = (unsigned char)v;
  }
  return (int)(len / 2);
}

/* `len` bytes as hex into `out` (room for 2 * len + 1): the form the arguments take a key in. */
static inline void nftset_hex(const unsigned char *bytes, int len, char *out) {
  for (int i = 0; i < len; i++) snprintf(out + 2 * i, 3, "%02x", bytes[i]);
  out[2 * (len > 0 ? len : 0)] = 0;
}

static inline void nftset_free(struct nftset_batch *t) {
  free(t->b.data);
  free(t->arg_of);
  free(t->gone);
  t->b.data = NULL;
  t->arg_of = NULL;
  t->gone = NULL;
}

/* Builds the batch of `n` arguments: 0, or -1 with `err` naming the bad one (nothing to free then). */
static inline int nftset_build(struct nftset_batch *t, const char *table, int n, const char *const *args, char *err, size_t errlen) {
  /* Each argument's messages are well under 1 KB (names of at most 255 bytes, keys of 64). */
  t->b.data = calloc((size_t)n + 4, 1024);
  t->b.used = 0;
  t->arg_of = calloc((size_t)n + 4, sizeof *t->arg_of);
  t->gone = calloc((size_t)n + 1, sizeof *t->gone);
  t->seq = 1;
  t->count = 0;
  t->echoed = 0;
  t->gone_count = 0;
  if (!t->b.data || !t->arg_of || !t->gone) {
    nftset_free(t);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  nfnl_batch_mark(&t->b, NFNL_MSG_BATCH_BEGIN, t->seq++);
  for (int i = 0; i < n; i++) {
    const char *a = args[i];
    if (a[0] == '*' || a[0] == '!') {
      size_t clen = strlen(a + 1);
      if (clen == 0 || clen >= 256) {
        snprintf(err, errlen, "bad chain %s", a);
        nftset_free(t);
        return -1;
      }
      t->arg_of[t->seq] = i + 1;
      nfnl_chain(&t->b, a[0] == '*', NFPROTO_IPV4, table, a + 1, t->seq++);
      t->count++;
      continue;
    }
    if (a[0] == '=' || a[0] == '>') {
      /* =CHAIN, or >CHAIN/KEY/N. */
      const char *slash = a[0] == '>' ? strchr(a, '/') : NULL;
      const char *slash2 = slash ? strchr(slash + 1, '/') : NULL;
      size_t clen = slash ? (size_t)(slash - a - 1) : strlen(a + 1);
      char chain[256];
      unsigned char key[64];
      int klen = slash2 ? nftset_unhex(slash + 1, (size_t)(slash2 - slash - 1), key) : 0;
      char *end = NULL;
      long want = slash2 ? strtol(slash2 + 1, &end, 10) : 0;
      int bad = clen == 0 || clen >= sizeof chain || (a[0] == '>' && (!slash2 || (klen != 4 && klen != 8) || !end || *end || want < 1 || want > 4096));
      if (bad) {
        snprintf(err, errlen, "bad rule %s", a);
        nftset_free(t);
        return -1;
      }
      memcpy(chain, a + 1, clen);
      chain[clen] = 0;
      t->arg_of[t->seq] = i + 1;
      if (a[0] == '=') nfnl_flush_chain(&t->b, NFPROTO_IPV4, table, chain, t->seq++);
      else nfnl_dispatch_rule(&t->b, NFPROTO_IPV4, table, chain, key, (size_t)klen, (uint32_t)want, t->seq++);
      t->count++;
      continue;
    }
    int add = a[0] == '+';
    int echo = a[0] == '~';
    const char *slash = strchr(a, '/');
    char set[64];
    if ((a[0] != '+' && a[0] != '-' && !echo) || !slash || slash - a - 1 <= 0 || slash - a - 1 >= (int)sizeof set) {
      snprintf(err, errlen, "bad element %s", a);
      nftset_free(t);
      return -1;
    }
    memcpy(set, a + 1, (size_t)(slash - a - 1));
    set[slash - a - 1] = 0;
    const char *colon = strchr(slash, ':');
    const char *target = colon && colon[1] == '@' ? colon + 2 : NULL;
    unsigned char key[64], data[64];
    int klen = nftset_unhex(slash + 1, colon ? (size_t)(colon - slash - 1) : strlen(slash + 1), key);
    int dlen = colon && !target ? nftset_unhex(colon + 1, strlen(colon + 1), data) : 0;
    if (klen <= 0 || dlen < 0 || (!add && colon) || (target && (!*target || strlen(target) >= 256))) {
      snprintf(err, errlen, "bad element %s", a);
      nftset_free(t);
      return -1;
    }
    t->arg_of[t->seq] = i + 1;
    nfnl_set_elem(&t->b, add, add ? NLM_F_CREATE | NLM_F_EXCL : echo ? NLM_F_ECHO : 0, NFPROTO_IPV4, table, set, key, (size_t)klen, data, (size_t)dlen, target, t->seq++);
    t->count++;
    t->echoed += echo;
  }
  nfnl_batch_mark(&t->b, NFNL_MSG_BATCH_END, t->seq++);
  return 0;
}

/* As NLMSG_OK and NLMSG_NEXT, for the attributes from `a` with `len` bytes left. */
static inline int nftset_attr_ok(const struct nlattr *a, int len) {
  return len >= (int)sizeof *a && a->nla_len >= sizeof *a && a->nla_len <= len;
}
static inline const struct nlattr *nftset_attr_next(const struct nlattr *a, int *len) {
  *len -= NLA_ALIGN(a->nla_len);
  return (const struct nlattr *)((const char *)a + NLA_ALIGN(a->nla_len));
}

/* The attribute of `type` among those from `a` for `len` bytes, or NULL. */
static inline const struct nlattr *nftset_attr(const struct nlattr *a, int len, unsigned short type) {
  for (; nftset_attr_ok(a, len); a = nftset_attr_next(a, &len)) {
    if ((a->nla_type & NLA_TYPE_MASK) == type) return a;
  }
  return NULL;
}
#define NFTSET_IN(a) ((const struct nlattr *)((const char *)(a) + NLA_HDRLEN))
#define NFTSET_LEN(a) ((int)(a)->nla_len - NLA_HDRLEN)

/*
 * The kernel's echo of a `~` deletion (sent at the commit, before the answers): each element's
 * key and its counter (NFTA_SET_ELEM_EXPR, the one expression of a set with `counter`).
 */
static inline void nftset_read_gone(struct nftset_batch *t, const struct nlmsghdr *h) {
  const struct nlattr *attrs = (const struct nlattr *)((const char *)NLMSG_DATA(h) + NLMSG_ALIGN(sizeof(struct nfgenmsg)));
  int len = (int)h->nlmsg_len - (int)NLMSG_LENGTH(NLMSG_ALIGN(sizeof(struct nfgenmsg)));
  const struct nlattr *set = nftset_attr(attrs, len, NFTA_SET_ELEM_LIST_SET);
  const struct nlattr *list = nftset_attr(attrs, len, NFTA_SET_ELEM_LIST_ELEMENTS);
  if (!set || !list) return;
  int left = NFTSET_LEN(list);
  for (const struct nlattr *e = NFTSET_IN(list); nftset_attr_ok(e, left); e = nftset_attr_next(e, &left)) {
    if (t->gone_count >= t->echoed) return;
    const struct nlattr *key = nftset_attr(NFTSET_IN(e), NFTSET_LEN(e), NFTA_SET_ELEM_KEY);
    const struct nlattr *value = key ? nftset_attr(NFTSET_IN(key), NFTSET_LEN(key), NFTA_DATA_VALUE) : NULL;
    const struct nlattr *expr = nftset_attr(NFTSET_IN(e), NFTSET_LEN(e), NFTA_SET_ELEM_EXPR);
    const struct nlattr *data = expr ? nftset_attr(NFTSET_IN(expr), NFTSET_LEN(expr), NFTA_EXPR_DATA) : NULL;
    const struct nlattr *packets = data ? nftset_attr(NFTSET_IN(data), NFTSET_LEN(data), NFTA_COUNTER_PACKETS) : NULL;
    if (!value || NFTSET_LEN(value) > 64 || NFTSET_LEN(set) < 1 || NFTSET_LEN(set) > 64) continue;
    struct nftset_gone *g = &t->gone[t->gone_count++];
    snprintf(g->set, sizeof g->set, "%.*s", NFTSET_LEN(set), (const char *)NFTSET_IN(set));
    g->klen = NFTSET_LEN(value);
    memcpy(g->key, NFTSET_IN(value), (size_t)g->klen);
    uint64_t be = 0;
    if (packets && NFTSET_LEN(packets) == 8) memcpy(&be, NFTSET_IN(packets), 8);
    g->packets = be64toh(be);
  }
}

/*
 * Sends the batch on `fd` and reads its answers: 0 when it committed; otherwise 1, with `err`
 * naming the failing argument and the kernel's reason, or the socket's failure (the whole
 * transaction is then undone by the kernel).
 */
static inline int nftset_exchange(int fd, struct nftset_batch *t, const char *table, const char *const *args, char *err, size_t errlen) {
  /*
   * The batch goes in one message, and the kernel queues an answer to every element before the
   * send returns: a batch past the socket's default buffers (a task of a service publishing 1,000
   * ports is 2,000 messages, 300 KB) would fail to send, or lose answers the loop below waits for.
   * As nft does, the buffers are made to fit (FORCE: root may pass the sysctl limits).
   */
  int sndbuf = (int)t->b.used + 65536, rcvbuf = t->count * 1024 + 65536;
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  if (sendto(fd, t->b.data, t->b.used, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
    snprintf(err, errlen, "send: %s", strerror(errno));
    return 1;
  }
  /* One answer per element (an acknowledgement or its error), whatever the outcome of the batch. */
  int answered = 0, failed = 0;
  _Alignas(struct nlmsghdr) char rbuf[16384];
  while (answered < t->count) {
    ssize_t got = recv(fd, rbuf, sizeof rbuf, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      snprintf(err, errlen, "receive: %s", strerror(errno));
      return 1;
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)rbuf; NLMSG_OK(h, (size_t)got); h = NLMSG_NEXT(h, got)) {
      if (h->nlmsg_type == ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM)) nftset_read_gone(t, h);
      if (h->nlmsg_type != NLMSG_ERROR) continue;
      const struct nlmsgerr *e = NLMSG_DATA(h);
      answered++;
      if (e->error < 0 && !failed && e->msg.nlmsg_seq >= 2 && e->msg.nlmsg_seq < t->seq && t->arg_of[e->msg.nlmsg_seq]) {
        snprintf(err, errlen, "%s %s: %s", table, args[t->arg_of[e->msg.nlmsg_seq] - 1], strerror(-e->error));
        failed = 1;
      }
    }
    /* A failed batch may answer only its failures. */
    if (failed) break;
  }
  return failed;
}

#endif
