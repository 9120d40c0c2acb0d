/*
 * berth-cni: the CNI plugin executable a runtime starts (bin/berth-cni links here). It does no
 * CNI work itself: it hands the runtime's configuration (stdin) and CNI_* variables to berthd,
 * which runs the plugin (src/cni/plugin.ts) in its own process, and prints berthd's answer with
 * its exit status. A Node process would spend more time starting than berthd spends on an ADD.
 *
 *   POST /berth/cni/exec on the configuration's "socket" (default /run/berth/berth.sock), the
 *   configuration as the body, CNI_COMMAND as the header Cni-Command (and so on); the answer's
 *   body is the plugin's output, its header Cni-Exit the exit status.
 *
 * When berthd cannot be reached, the Node form of the plugin (bin/berth-cni-node) gets the same
 * input, so VERSION is still answered and the errors are the CNI ones ("try again later", for
 * STATUS "not available") with nothing written twice.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/berth/berth.sock"
#define CONFIG_LIMIT (4 * 1024 * 1024)

static const char *const VARIABLES[][2] = {
  { "CNI_COMMAND", "Cni-Command" }, { "CNI_CONTAINERID", "Cni-Containerid" }, { "CNI_NETNS", "Cni-Netns" },
  { "CNI_IFNAME", "Cni-Ifname" }, { "CNI_ARGS", "Cni-Args" }, { "CNI_PATH", "Cni-Path" },
};

struct buf { char *data; size_t len, cap; };

static int grow(struct buf *b, size_t more) {
  if (b->len + more + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + more + 1) cap *= 2;
  char *d = realloc(b->data, cap);
  if (!d) return -1;
  b->data = d;
  b->cap = cap;
  return 0;
}

static int append(struct buf *b, const char *s, size_t n) {
  if (grow(b, n) < 0) return -1;
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = 0;
  return 0;
}

static int read_all(int fd, struct buf *b, size_t limit) {
  for (;;) {
    if (grow(b, 65536) < 0) return -1;
    ssize_t n = read(fd, b->data + b->len, b->cap - b->len - 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) return 0;
    b->len += (size_t)n;
    b->data[b->len] = 0;
    if (b->len > limit) { errno = EFBIG; return -1; }
  }
}

static int write_all(int fd, const char *s, size_t n) {
  while (n) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

/*
 * The string value of a key of the configuration's top-level object ("socket"), unescaped; only
 * the escapes a path can need. A key nested deeper is not taken for it: depth is counted.
 */
static int config_string(const char *json, const char *key, char *out, size_t size) {
  int depth = 0;
  size_t klen = strlen(key);
  for (const char *p = json; *p; p++) {
    if (*p == '{' || *p == '[') { depth++; continue; }
    if (*p == '}' || *p == ']') { depth--; continue; }
    if (*p != '"') continue;
    /* A string: a key of the top object if `:` follows it at depth 1. */
    const char *start = ++p;
    while (*p && *p != '"') { if (*p == '\\' && p[1]) p++; p++; }
    if (!*p) return -1;
    size_t len = (size_t)(p - start);
    const char *q = p + 1;
    while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
    if (*q != ':' || depth != 1 || len != klen || strncmp(start, key, klen) != 0) continue;
    q++;
    while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
    if (*q != '"') return -1;
    size_t o = 0;
    for (q++; *q && *q != '"'; q++) {
      char c = *q;
      if (c == '\\') {
        q++;
        if (*q == '/' || *q == '\\' || *q == '"') c = *q;
        else return -1;
      }
      if (o + 1 >= size) return -1;
      out[o++] = c;
    }
    if (*q != '"') return -1;
    out[o] = 0;
    return 0;
  }
  return -1;
}

/* The Node form of the plugin, with the input it would have read: bin/berth-cni-node beside build/. */
static void fall_back(const struct buf *input) {
  char exe[PATH_MAX], node[PATH_MAX + 32];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    snprintf(node, sizeof node, "%s/../bin/berth-cni-node", dirname(exe));
    int fd = memfd_create("berth-cni-input", 0);
    if (fd >= 0 && write_all(fd, input->data ? input->data : "", input->len) == 0 && lseek(fd, 0, SEEK_SET) == 0 && dup2(fd, 0) == 0) {
      char *argv[] = { node, NULL };
      execv(node, argv);
    }
  }
  /* Nothing left to hand over to: the CNI error a runtime understands ("try again later"). */
  printf("{\"code\":11,\"msg\":\"berth-cni: berthd does not answer, and %s cannot run: %s\"}\n", "bin/berth-cni-node", strerror(errno));
  exit(1);
}

int main(void) {
  struct buf input = { 0 }, request = { 0 }, response = { 0 };
  if (read_all(0, &input, CONFIG_LIMIT) < 0) {
    printf("{\"code\":4,\"msg\":\"berth-cni: reading the configuration: %s\"}\n", strerror(errno));
    return 1;
  }
  char socket_path[sizeof ((struct sockaddr_un *)0)->sun_path];
  if (config_string(input.data ? input.data : "", "socket", socket_path, sizeof socket_path) < 0) strcpy(socket_path, DEFAULT_SOCKET);

  char head[16384];
  int used = snprintf(head, sizeof head, "POST /berth/cni/exec HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n", input.len);
  for (size_t i = 0; i < sizeof VARIABLES / sizeof VARIABLES[0]; i++) {
    const char *v = getenv(VARIABLES[i][0]);
    /* A value that cannot be a header goes the Node way, which takes any value. */
    if (!v) continue;
    if (strpbrk(v, "\r\n")) fall_back(&input);
    used += snprintf(head + used, sizeof head - (size_t)used, "%s: %s\r\n", VARIABLES[i][1], v);
    if ((size_t)used >= sizeof head) fall_back(&input);
  }
  used += snprintf(head + used, sizeof head - (size_t)used, "\r\n");
  if ((size_t)used >= sizeof head || append(&request, head, (size_t)used) < 0 || append(&request, input.data ? input.data : "", input.len) < 0) fall_back(&input);

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  strcpy(addr.sun_path, socket_path);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) fall_back(&input);
  if (write_all(fd, request.data, request.len) < 0 || read_all(fd, &response, 64 * 1024 * 1024) < 0) fall_back(&input);
  close(fd);

  /* HTTP/1.1 200 OK ... Cni-Exit: N ... \r\n\r\n body */
  char *end = response.data ? strstr(response.data, "\r\n\r\n") : NULL;
  int status = 0;
  if (!end || sscanf(response.data, "HTTP/1.%*d %d", &status) != 1 || status != 200) fall_back(&input);
  *end = 0;
  int exit_status = 1;
  for (char *line = strstr(response.data, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
    if (strncasecmp(line + 2, "Cni-Exit:", 9) == 0) exit_status = atoi(line + 11);
  }
  const char *body = end + 4;
  write_all(1, body, response.len - (size_t)(body - response.data));
  return exit_status;
}
