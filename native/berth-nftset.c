/*
 * berth-nftset: adds and deletes elements of a table's sets and maps over netlink, in one
 * transaction, in the namespace it runs in (berth-spawn starts it inside a sandbox).
 *
 *   berth-nftset TABLE [+SET/KEY[:DATA] | -SET/KEY]...      (family ip; KEY and DATA in hex)
 *
 * `nft` reads every chain, set and stateful object of the namespace into its cache before any
 * element command (nft 1.0.6), which with 10,000 services in a sandbox is most of a backend
 * change's cost; the kernel's own work on an element is constant. KEY and DATA are the element's
 * bytes as the kernel stores them (servicelb.ts encodes them). Elements of a set with `counter`
 * get a fresh counter from the set. Exits 0 when the transaction committed; otherwise prints the
 * failing element and the kernel's reason and exits 1 (the whole transaction is then undone).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define BUF_SIZE (1 << 20)

struct nlattr_hdr { unsigned short len, type; };

static char *buf;
static size_t used;

static struct nlmsghdr *msg_start(unsigned short type, unsigned short flags, unsigned char family, unsigned short res_id, unsigned seq) {
  struct nlmsghdr *n = (struct nlmsghdr *)(buf + used);
  memset(n, 0, NLMSG_HDRLEN + sizeof(struct nfgenmsg));
  n->nlmsg_type = type;
  n->nlmsg_flags = NLM_F_REQUEST | flags;
  n->nlmsg_seq = seq;
  n->nlmsg_len = NLMSG_HDRLEN + sizeof(struct nfgenmsg);
  struct nfgenmsg *g = NLMSG_DATA(n);
  g->nfgen_family = family;
  g->version = NFNETLINK_V0;
  g->res_id = htons(res_id);
  return n;
}

static void msg_end(struct nlmsghdr *n) { used += NLMSG_ALIGN(n->nlmsg_len); }

static struct nlattr_hdr *attr(struct nlmsghdr *n, unsigned short type, const void *data, size_t len) {
  struct nlattr_hdr *a = (struct nlattr_hdr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));
  a->type = type;
  a->len = (unsigned short)(sizeof *a + len);
  if (len) memcpy(a + 1, data, len);
  n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + NLA_ALIGN(a->len);
  return a;
}

static struct nlattr_hdr *nest(struct nlmsghdr *n, unsigned short type) { return attr(n, type | NLA_F_NESTED, NULL, 0); }
static void nest_done(struct nlmsghdr *n, struct nlattr_hdr *a) { a->len = (unsigned short)((char *)n + n->nlmsg_len - (char *)a); }

static int unhex(const char *s, size_t len, unsigned char *out) {
  if (len % 2 || len / 2 > 64) return -1;
  for (size_t i = 0; i < len; i += 2) {
    unsigned v;
    if (sscanf(s + i, "%2x", &v) != 1) return -1;
    out[i / 2] = (unsigned char)v;
  }
  return (int)(len / 2);
}

static void value(struct nlmsghdr *n, unsigned short type, const unsigned char *bytes, int len) {
  struct nlattr_hdr *d = nest(n, type);
  attr(n, NFTA_DATA_VALUE, bytes, (size_t)len);
  nest_done(n, d);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: berth-nftset TABLE [+SET/KEY[:DATA] | -SET/KEY]...\n");
    return 2;
  }
  buf = calloc(1, BUF_SIZE);
  if (!buf) return 1;
  const char *table = argv[1];
  unsigned seq = 1;
  struct nlmsghdr *n = msg_start(NFNL_MSG_BATCH_BEGIN, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, seq++);
  msg_end(n);
  int count = argc - 2;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    int add = a[0] == '+';
    if ((a[0] != '+' && a[0] != '-') || used > BUF_SIZE - 4096) {
      fprintf(stderr, "berth-nftset: bad element %s\n", a);
      return 2;
    }
    const char *slash = strchr(a, '/');
    char set[64];
    if (!slash || slash - a - 1 <= 0 || slash - a - 1 >= (int)sizeof set) {
      fprintf(stderr, "berth-nftset: bad element %s\n", a);
      return 2;
    }
    memcpy(set, a + 1, (size_t)(slash - a - 1));
    set[slash - a - 1] = 0;
    const char *colon = strchr(slash, ':');
    unsigned char key[64], data[64];
    int klen = unhex(slash + 1, colon ? (size_t)(colon - slash - 1) : strlen(slash + 1), key);
    int dlen = colon ? unhex(colon + 1, strlen(colon + 1), data) : 0;
    if (klen <= 0 || dlen < 0 || (!add && colon)) {
      fprintf(stderr, "berth-nftset: bad element %s\n", a);
      return 2;
    }
    n = msg_start((NFNL_SUBSYS_NFTABLES << 8) | (add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM),
                  NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_EXCL : 0), NFPROTO_IPV4, 0, seq++);
    attr(n, NFTA_SET_ELEM_LIST_TABLE, table, strlen(table) + 1);
    attr(n, NFTA_SET_ELEM_LIST_SET, set, strlen(set) + 1);
    struct nlattr_hdr *list = nest(n, NFTA_SET_ELEM_LIST_ELEMENTS);
    struct nlattr_hdr *elem = nest(n, NFTA_LIST_ELEM);
    value(n, NFTA_SET_ELEM_KEY, key, klen);
    if (dlen) value(n, NFTA_SET_ELEM_DATA, data, dlen);
    nest_done(n, elem);
    nest_done(n, list);
    msg_end(n);
  }
  n = msg_start(NFNL_MSG_BATCH_END, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, seq++);
  msg_end(n);

  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) {
    perror("berth-nftset: netlink socket");
    return 1;
  }
  struct timeval tv = { .tv_sec = 10 };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  if (sendto(fd, buf, used, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
    perror("berth-nftset: send");
    return 1;
  }
  /* One answer per element (an acknowledgement or its error), whatever the outcome of the batch. */
  int answered = 0, failed = 0;
  char rbuf[16384];
  while (answered < count) {
    ssize_t got = recv(fd, rbuf, sizeof rbuf, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      perror("berth-nftset: receive");
      return 1;
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)rbuf; NLMSG_OK(h, (size_t)got); h = NLMSG_NEXT(h, got)) {
      if (h->nlmsg_type != NLMSG_ERROR) continue;
      const struct nlmsgerr *e = NLMSG_DATA(h);
      answered++;
      if (e->error < 0 && e->msg.nlmsg_seq >= 2 && (int)e->msg.nlmsg_seq - 2 < count) {
        fprintf(stderr, "berth-nftset: %s %s: %s\n", table, argv[2 + e->msg.nlmsg_seq - 2], strerror(-e->error));
        failed = 1;
      }
    }
    /* A failed batch may answer only its failures. */
    if (failed) break;
  }
  /*
   * Closing the socket waits for the kernel to free what the transaction replaced (an RCU grace
   * period, 5-10 ms here): a child that keeps nothing else open does that, so the caller does not
   * wait for it.
   */
  fflush(stderr);
  if (fork() == 0) {
    for (int i = 0; i < 3; i++) close(i);
    close(fd);
    _exit(0);
  }
  _exit(failed);
}
