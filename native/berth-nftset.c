/*
 * berth-nftset: adds and deletes elements of a table's sets and maps over netlink, in one
 * transaction, in the namespace it runs in (berth-spawn starts it inside a sandbox).
 *
 *   berth-nftset TABLE [+SET/KEY[:DATA|:@CHAIN] | -SET/KEY | ~SET/KEY | *CHAIN | !CHAIN | =CHAIN | >CHAIN/KEY/N]...
 *   (family ip; KEY and DATA in hex; see berth-nftset-core.h)
 *
 * `~SET/KEY` deletes as `-` does and prints `SET/KEY PACKETS`, the element's counter as the commit left it.
 *
 * `=CHAIN` flushes a bucket chain and `>CHAIN/KEY/N` appends a key's rule to it: the key's match
 * (a VIP, or a published port's protocol and port), then the balancer's dispatch over N backends,
 * `goto to0` for one, `numgen inc mod N vmap @rrN` for more (rrN must exist). So a VIP whose
 * number of backends changes is no `nft` run either.
 *
 * `nft` reads every chain, set and stateful object of the namespace into its cache before any
 * element command (nft 1.0.6), which with 10,000 services in a sandbox is most of a backend
 * change's cost; the kernel's own work on an element is constant. KEY and DATA are the element's
 * bytes as the kernel stores them (servicelb.ts encodes them). Elements of a set with `counter`
 * get a fresh counter from the set. Exits 0 when the transaction committed; otherwise prints the
 * failing element and the kernel's reason and exits 1 (the whole transaction is then undone).
 * berthd sends the same batch itself (berth-nftset-core.h, through the addon's nftsetIn): a
 * process started per change cost 50 ms and more under load. This program is the same change
 * made by hand, to try one in a sandbox.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "berth-nftset-core.h"

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: berth-nftset TABLE [+SET/KEY[:DATA|:@CHAIN] | -SET/KEY | ~SET/KEY | *CHAIN | !CHAIN | =CHAIN | >CHAIN/KEY/N]...\n");
    return 2;
  }
  const char *table = argv[1];
  const char *const *args = (const char *const *)argv + 2;
  char err[512];
  struct nftset_batch t;
  if (nftset_build(&t, table, argc - 2, args, err, sizeof err) != 0) {
    fprintf(stderr, "berth-nftset: %s\n", err);
    return 2;
  }
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) {
    perror("berth-nftset: netlink socket");
    return 1;
  }
  struct timeval tv = { .tv_sec = 10 };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int failed = nftset_exchange(fd, &t, table, args, err, sizeof err);
  if (failed) fprintf(stderr, "berth-nftset: %s\n", err);
  for (int i = 0; !failed && i < t.gone_count; i++) {
    char hex[2 * sizeof t.gone[i].key + 1];
    nftset_hex(t.gone[i].key, t.gone[i].klen, hex);
    printf("%s/%s %llu\n", t.gone[i].set, hex, (unsigned long long)t.gone[i].packets);
  }
  fflush(stdout);
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
