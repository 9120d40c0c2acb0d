/*
 * berth-nftset: adds and deletes elements of a table's sets and maps over netlink, in one
 * transaction, in the namespace it runs in (berth-spawn starts it inside a sandbox).
 *
 *   berth-nftset TABLE [+SET/KEY[:DATA] | -SET/KEY | =CHAIN/N]...   (family ip; KEY and DATA in hex)
 *
 * `=CHAIN/N` replaces the one rule of a VIP's chain with the balancer's dispatch over N backends:
 * `goto to0` for one, `numgen inc mod N vmap @rrN` for more (rrN must exist). So a VIP whose
 * number of backends changes is no `nft` run either.
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

#include "berth-nfnl.h"

#define BUF_SIZE (1 << 20)

static int unhex(const char *s, size_t len, unsigned char *out) {
  if (len % 2 || len / 2 > 64) return -1;
  for (size_t i = 0; i < len; i += 2) {
    unsigned v;
    if (sscanf(s + i, "%2x", &v) != 1) return -1;
    out[i / 2] = (unsigned char)v;
  }
  return (int)(len / 2);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: berth-nftset TABLE [+SET/KEY[:DATA] | -SET/KEY]...\n");
    return 2;
  }
  struct nfnl_buf b = { .data = calloc(1, BUF_SIZE) };
  /* The argument each message of the batch came from, by sequence number (a rule takes two). */
  int *arg_of = calloc((size_t)(2 * argc + 4), sizeof *arg_of);
  if (!b.data || !arg_of) return 1;
  const char *table = argv[1];
  unsigned seq = 1;
  nfnl_batch_mark(&b, NFNL_MSG_BATCH_BEGIN, seq++);
  int count = 0;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    int add = a[0] == '+';
    if ((a[0] != '+' && a[0] != '-' && a[0] != '=') || b.used > BUF_SIZE - 4096) {
      fprintf(stderr, "berth-nftset: bad element %s\n", a);
      return 2;
    }
    if (a[0] == '=') {
      const char *slash = strrchr(a, '/');
      char chain[256];
      char *end = NULL;
      long n = slash ? strtol(slash + 1, &end, 10) : 0;
      if (!slash || slash - a - 1 <= 0 || slash - a - 1 >= (int)sizeof chain || !end || *end || n < 1 || n > 4096) {
        fprintf(stderr, "berth-nftset: bad rule %s\n", a);
        return 2;
      }
      memcpy(chain, a + 1, (size_t)(slash - a - 1));
      chain[slash - a - 1] = 0;
      arg_of[seq] = i;
      nfnl_flush_chain(&b, NFPROTO_IPV4, table, chain, seq++);
      arg_of[seq] = i;
      nfnl_dispatch_rule(&b, NFPROTO_IPV4, table, chain, (uint32_t)n, seq++);
      count += 2;
      continue;
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
    arg_of[seq] = i;
    nfnl_set_elem(&b, add, NLM_F_CREATE | NLM_F_EXCL, NFPROTO_IPV4, table, set, key, (size_t)klen, data, (size_t)dlen, seq++);
    count++;
  }
  nfnl_batch_mark(&b, NFNL_MSG_BATCH_END, seq++);

  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) {
    perror("berth-nftset: netlink socket");
    return 1;
  }
  struct timeval tv = { .tv_sec = 10 };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  /*
   * The batch goes in one message, and the kernel queues an answer to every element before the
   * send returns: a batch past the socket's default buffers (a task of a service publishing 1,000
   * ports is 2,000 messages, 300 KB) would fail to send, or lose answers the loop below waits for.
   * As nft does, the buffers are made to fit (FORCE: root may pass the sysctl limits).
   */
  int sndbuf = (int)b.used + 65536, rcvbuf = count * 1024 + 65536;
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  if (sendto(fd, b.data, b.used, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
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
      if (e->error < 0 && e->msg.nlmsg_seq >= 2 && e->msg.nlmsg_seq < seq && arg_of[e->msg.nlmsg_seq]) {
        fprintf(stderr, "berth-nftset: %s %s: %s\n", table, argv[arg_of[e->msg.nlmsg_seq]], strerror(-e->error));
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
