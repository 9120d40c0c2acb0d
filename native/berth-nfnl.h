/*
 * The nfnetlink plumbing berth's two writers of nftables set elements share (berth-nftset, the
 * executable a service balancer runs inside a sandbox, and the addon's setElements in berthd's
 * own namespace): a batch of element messages built in one buffer.
 */
#ifndef BERTH_NFNL_H
#define BERTH_NFNL_H

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct nfnl_attr { unsigned short len, type; };

/* A batch being built: `used` bytes of `data`, which the caller sized. */
struct nfnl_buf {
  char *data;
  size_t used;
};

static inline struct nlmsghdr *nfnl_msg_start(struct nfnl_buf *b, unsigned short type, unsigned short flags, unsigned char family, uint16_t res_id, uint32_t seq) {
  struct nlmsghdr *n = (struct nlmsghdr *)(b->data + b->used);
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

static inline void nfnl_msg_end(struct nfnl_buf *b, struct nlmsghdr *n) { b->used += NLMSG_ALIGN(n->nlmsg_len); }

static inline struct nfnl_attr *nfnl_put(struct nlmsghdr *n, unsigned short type, const void *data, size_t len) {
  struct nfnl_attr *a = (struct nfnl_attr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));
  a->type = type;
  a->len = (unsigned short)(sizeof *a + len);
  if (len) memcpy(a + 1, data, len);
  n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + NLA_ALIGN(a->len);
  return a;
}

static inline struct nfnl_attr *nfnl_nest(struct nlmsghdr *n, unsigned short type) { return nfnl_put(n, type | NLA_F_NESTED, NULL, 0); }
static inline void nfnl_nest_done(struct nlmsghdr *n, struct nfnl_attr *a) { a->len = (unsigned short)((char *)n + n->nlmsg_len - (char *)a); }

static inline void nfnl_put_be32(struct nlmsghdr *n, unsigned short type, uint32_t v) {
  uint32_t be = htonl(v);
  nfnl_put(n, type, &be, sizeof be);
}

/* The batch's begin or end marker. */
static inline void nfnl_batch_mark(struct nfnl_buf *b, unsigned short type, uint32_t seq) {
  nfnl_msg_end(b, nfnl_msg_start(b, type, 0, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, seq));
}

/*
 * One element added or deleted, acknowledged by its own answer; `flags` beside NLM_F_ACK
 * (NLM_F_CREATE, NLM_F_ECHO...). Its data: a map's value (`data`, may be empty), or for a verdict
 * map `goto goto_chain` (non-NULL).
 */
static inline void nfnl_set_elem(struct nfnl_buf *b, int add, unsigned short flags, unsigned char family, const char *table, const char *set,
                                 const unsigned char *key, size_t key_len, const unsigned char *data, size_t data_len, const char *goto_chain, uint32_t seq) {
  struct nlmsghdr *n = nfnl_msg_start(b, (NFNL_SUBSYS_NFTABLES << 8) | (add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM),
                                      NLM_F_ACK | flags, family, 0, seq);
  nfnl_put(n, NFTA_SET_ELEM_LIST_TABLE, table, strlen(table) + 1);
  nfnl_put(n, NFTA_SET_ELEM_LIST_SET, set, strlen(set) + 1);
  struct nfnl_attr *list = nfnl_nest(n, NFTA_SET_ELEM_LIST_ELEMENTS);
  struct nfnl_attr *elem = nfnl_nest(n, NFTA_LIST_ELEM);
  struct nfnl_attr *k = nfnl_nest(n, NFTA_SET_ELEM_KEY);
  nfnl_put(n, NFTA_DATA_VALUE, key, key_len);
  nfnl_nest_done(n, k);
  if (goto_chain) {
    struct nfnl_attr *d = nfnl_nest(n, NFTA_SET_ELEM_DATA);
    struct nfnl_attr *v = nfnl_nest(n, NFTA_DATA_VERDICT);
    nfnl_put_be32(n, NFTA_VERDICT_CODE, (uint32_t)NFT_GOTO);
    nfnl_put(n, NFTA_VERDICT_CHAIN, goto_chain, strlen(goto_chain) + 1);
    nfnl_nest_done(n, v);
    nfnl_nest_done(n, d);
  } else if (data_len) {
    struct nfnl_attr *d = nfnl_nest(n, NFTA_SET_ELEM_DATA);
    nfnl_put(n, NFTA_DATA_VALUE, data, data_len);
    nfnl_nest_done(n, d);
  }
  nfnl_nest_done(n, elem);
  nfnl_nest_done(n, list);
  nfnl_msg_end(b, n);
}

/* A regular chain added (NLM_F_CREATE without NLM_F_EXCL: there already is fine, as `nft add chain`) or deleted, acknowledged. */
static inline void nfnl_chain(struct nfnl_buf *b, int add, unsigned char family, const char *table, const char *chain, uint32_t seq) {
  struct nlmsghdr *n = nfnl_msg_start(b, (NFNL_SUBSYS_NFTABLES << 8) | (add ? NFT_MSG_NEWCHAIN : NFT_MSG_DELCHAIN), NLM_F_ACK | (add ? NLM_F_CREATE : 0), family, 0, seq);
  nfnl_put(n, NFTA_CHAIN_TABLE, table, strlen(table) + 1);
  nfnl_put(n, NFTA_CHAIN_NAME, chain, strlen(chain) + 1);
  nfnl_msg_end(b, n);
}

/* Every rule of a chain deleted (a DELRULE naming the chain and no handle), acknowledged. */
static inline void nfnl_flush_chain(struct nfnl_buf *b, unsigned char family, const char *table, const char *chain, uint32_t seq) {
  struct nlmsghdr *n = nfnl_msg_start(b, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELRULE, NLM_F_ACK, family, 0, seq);
  nfnl_put(n, NFTA_RULE_TABLE, table, strlen(table) + 1);
  nfnl_put(n, NFTA_RULE_CHAIN, chain, strlen(chain) + 1);
  nfnl_msg_end(b, n);
}

static inline struct nfnl_attr *nfnl_expr_start(struct nlmsghdr *n, const char *name, struct nfnl_attr **data) {
  struct nfnl_attr *e = nfnl_nest(n, NFTA_LIST_ELEM);
  nfnl_put(n, NFTA_EXPR_NAME, name, strlen(name) + 1);
  *data = nfnl_nest(n, NFTA_EXPR_DATA);
  return e;
}


/* An expression loading into register 1: `payload` of a header at an offset, or `meta` of a key. */
static inline void nfnl_payload_load(struct nlmsghdr *n, uint32_t base, uint32_t offset, uint32_t len) {
  struct nfnl_attr *data;
  struct nfnl_attr *e = nfnl_expr_start(n, "payload", &data);
  nfnl_put_be32(n, NFTA_PAYLOAD_DREG, NFT_REG_1);
  nfnl_put_be32(n, NFTA_PAYLOAD_BASE, base);
  nfnl_put_be32(n, NFTA_PAYLOAD_OFFSET, offset);
  nfnl_put_be32(n, NFTA_PAYLOAD_LEN, len);
  nfnl_nest_done(n, data);
  nfnl_nest_done(n, e);
}

static inline void nfnl_meta_load(struct nlmsghdr *n, uint32_t key) {
  struct nfnl_attr *data;
  struct nfnl_attr *e = nfnl_expr_start(n, "meta", &data);
  nfnl_put_be32(n, NFTA_META_DREG, NFT_REG_1);
  nfnl_put_be32(n, NFTA_META_KEY, key);
  nfnl_nest_done(n, data);
  nfnl_nest_done(n, e);
}

/* `cmp eq` of register 1 with these bytes. */
static inline void nfnl_cmp_eq(struct nlmsghdr *n, const unsigned char *value, size_t len) {
  struct nfnl_attr *data;
  struct nfnl_attr *e = nfnl_expr_start(n, "cmp", &data);
  nfnl_put_be32(n, NFTA_CMP_SREG, NFT_REG_1);
  nfnl_put_be32(n, NFTA_CMP_OP, NFT_CMP_EQ);
  struct nfnl_attr *d = nfnl_nest(n, NFTA_CMP_DATA);
  nfnl_put(n, NFTA_DATA_VALUE, value, len);
  nfnl_nest_done(n, d);
  nfnl_nest_done(n, data);
  nfnl_nest_done(n, e);
}

/*
 * A key's balancer rule appended to its bucket chain: its match, then `goto to0` for one backend,
 * else `numgen inc mod N vmap @rrN` (what nft sends for them). A key of 4 bytes is a VIP (`ip daddr
 * A.B.C.D`: 4 bytes of the network header at 16); of 8, a published port as a map stores it
 * (protocol, then port, each in a 32-bit register: `tcp dport P`, which nft sends as `meta
 * l4proto` and 2 bytes of the transport header at 2). The caller checks the length.
 */
static inline void nfnl_dispatch_rule(struct nfnl_buf *b, unsigned char family, const char *table, const char *chain, const unsigned char *key, size_t klen, uint32_t backends, uint32_t seq) {
  struct nlmsghdr *n = nfnl_msg_start(b, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE, NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND, family, 0, seq);
  nfnl_put(n, NFTA_RULE_TABLE, table, strlen(table) + 1);
  nfnl_put(n, NFTA_RULE_CHAIN, chain, strlen(chain) + 1);
  struct nfnl_attr *list = nfnl_nest(n, NFTA_RULE_EXPRESSIONS);
  struct nfnl_attr *data;
  if (klen == 4) {
    nfnl_payload_load(n, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
    nfnl_cmp_eq(n, key, 4);
  } else {
    nfnl_meta_load(n, NFT_META_L4PROTO);
    nfnl_cmp_eq(n, key, 1);
    nfnl_payload_load(n, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    nfnl_cmp_eq(n, key + 4, 2);
  }
  if (backends == 1) {
    struct nfnl_attr *e = nfnl_expr_start(n, "immediate", &data);
    nfnl_put_be32(n, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
    struct nfnl_attr *d = nfnl_nest(n, NFTA_IMMEDIATE_DATA);
    struct nfnl_attr *v = nfnl_nest(n, NFTA_DATA_VERDICT);
    nfnl_put_be32(n, NFTA_VERDICT_CODE, (uint32_t)NFT_GOTO);
    nfnl_put(n, NFTA_VERDICT_CHAIN, "to0", 4);
    nfnl_nest_done(n, v);
    nfnl_nest_done(n, d);
    nfnl_nest_done(n, data);
    nfnl_nest_done(n, e);
  } else {
    char set[32];
    snprintf(set, sizeof set, "rr%u", backends);
    struct nfnl_attr *e = nfnl_expr_start(n, "numgen", &data);
    nfnl_put_be32(n, NFTA_NG_DREG, NFT_REG_1);
    nfnl_put_be32(n, NFTA_NG_MODULUS, backends);
    nfnl_put_be32(n, NFTA_NG_TYPE, NFT_NG_INCREMENTAL);
    nfnl_put_be32(n, NFTA_NG_OFFSET, 0);
    nfnl_nest_done(n, data);
    nfnl_nest_done(n, e);
    e = nfnl_expr_start(n, "lookup", &data);
    nfnl_put(n, NFTA_LOOKUP_SET, set, strlen(set) + 1);
    nfnl_put_be32(n, NFTA_LOOKUP_SREG, NFT_REG_1);
    nfnl_put_be32(n, NFTA_LOOKUP_DREG, NFT_REG_VERDICT);
    nfnl_nest_done(n, data);
    nfnl_nest_done(n, e);
  }
  nfnl_nest_done(n, list);
  nfnl_msg_end(b, n);
}

#endif
