/*
 * The few rtnetlink helpers berth's native pieces share: building a request's attributes and
 * sending one request and waiting for its acknowledgement.
 */
#ifndef BERTH_NL_H
#define BERTH_NL_H

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <sys/socket.h>

static inline struct rtattr *attr_tail(struct nlmsghdr *n) {
  return (struct rtattr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));
}

static inline void add_attr(struct nlmsghdr *n, unsigned short type, const void *data, size_t len) {
  struct rtattr *a = attr_tail(n);
  a->rta_type = type;
  a->rta_len = RTA_LENGTH(len);
  if (len) memcpy(RTA_DATA(a), data, len);
  n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(a->rta_len);
}

static inline struct rtattr *nest_start(struct nlmsghdr *n, unsigned short type) {
  struct rtattr *a = attr_tail(n);
  add_attr(n, type, NULL, 0);
  return a;
}

static inline void nest_end(struct nlmsghdr *n, struct rtattr *a) {
  a->rta_len = (unsigned short)((char *)attr_tail(n) - (char *)a);
}

/* Sends one request and waits for its acknowledgement; 0 or an errno. */
static inline int talk(int fd, struct nlmsghdr *n, uint32_t seq) {
  n->nlmsg_seq = seq;
  n->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  if (sendto(fd, n, n->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return errno;
  char buf[8192];
  for (;;) {
    ssize_t got = recv(fd, buf, sizeof buf, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)got); h = NLMSG_NEXT(h, got)) {
      if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR) continue;
      const struct nlmsgerr *e = NLMSG_DATA(h);
      return e->error < 0 ? -e->error : 0;
    }
  }
}

#endif
