/*
 * berth-spawn: starts berthd's short-lived commands (ip, nft, mount, runc start, ...) for it.
 *
 * Node starts a child by forking itself, and a fork costs in proportion to the parent's memory:
 * 3-5 ms for berthd here, growing as berthd holds more containers, against well under a
 * millisecond for this small process. berthd sends a request on our stdin and gets the child's
 * exit status and output back on our stdout; a request may name a network namespace, which the
 * child enters before exec (what `nsenter --net=` did, without the extra exec).
 *
 * Frames, little-endian u32 unless said otherwise:
 *   request:  len, id, nslen, ns bytes, argc, argc x (len, bytes), inlen, stdin bytes
 *   response: len, id, status (i32: exit code, 128+signal, or -errno if the child could not
 *             start), outlen, stdout bytes, errlen, stderr bytes
 * Children are served concurrently; responses come in the order children finish. EOF on stdin
 * (berthd gone) ends this process; children already started run on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

struct buf { char *p; size_t len, cap; };

static void buf_add(struct buf *b, const void *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) { perror("berth-spawn: realloc"); exit(1); }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
}

struct child {
  uint32_t id;
  pid_t pid;
  int in, out, err;       /* our ends; -1 once closed */
  struct buf input;       /* stdin still to write, from input_off */
  size_t input_off;
  struct buf stdout_buf, stderr_buf;
  int reaped, status;
  struct child *next;
};

static struct child *children;

static uint32_t get_u32(const char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static void put_u32(struct buf *b, uint32_t v) { buf_add(b, &v, 4); }

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      exit(0); /* berthd is gone */
    }
    p += w;
    n -= (size_t)w;
  }
}

static void respond(uint32_t id, int32_t status, const struct buf *out, const struct buf *err) {
  struct buf r = { 0 };
  uint32_t len = 4 + 4 + 4 + (uint32_t)out->len + 4 + (uint32_t)err->len;
  put_u32(&r, len);
  put_u32(&r, id);
  put_u32(&r, (uint32_t)status);
  put_u32(&r, (uint32_t)out->len);
  buf_add(&r, out->p, out->len);
  put_u32(&r, (uint32_t)err->len);
  buf_add(&r, err->p, err->len);
  write_all(1, r.p, r.len);
  free(r.p);
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* Starts one request's child; answers at once when it cannot start. */
static void start(uint32_t id, const char *ns, char **argv, const char *input, size_t inlen) {
  int pin[2], pout[2], perr[2], pexec[2];
  if (pipe2(pin, O_CLOEXEC) || pipe2(pout, O_CLOEXEC) || pipe2(perr, O_CLOEXEC) || pipe2(pexec, O_CLOEXEC)) {
    struct buf none = { 0 };
    respond(id, -errno, &none, &none);
    return;
  }
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    int err = 0;
    if (*ns) {
      int fd = open(ns, O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) err = errno;
    }
    if (!err) {
      dup2(pin[0], 0);
      dup2(pout[1], 1);
      dup2(perr[1], 2);
      execvp(argv[0], argv);
      err = errno;
    }
    if (write(pexec[1], &err, sizeof err) < 0) { /* nothing more to say */ }
    _exit(127);
  }
  close(pin[0]);
  close(pout[1]);
  close(perr[1]);
  close(pexec[1]);
  int exec_err = 0;
  ssize_t got = pid < 0 ? -1 : read(pexec[0], &exec_err, sizeof exec_err);
  close(pexec[0]);
  if (pid < 0 || got == (ssize_t)sizeof exec_err) {
    int e = pid < 0 ? errno : exec_err;
    if (pid > 0) waitpid(pid, NULL, 0);
    close(pin[1]);
    close(pout[0]);
    close(perr[0]);
    struct buf none = { 0 };
    respond(id, -e, &none, &none);
    return;
  }
  struct child *c = calloc(1, sizeof *c);
  if (!c) { perror("berth-spawn: calloc"); exit(1); }
  c->id = id;
  c->pid = pid;
  c->in = pin[1];
  c->out = pout[0];
  c->err = perr[0];
  set_nonblock(c->in);
  set_nonblock(c->out);
  set_nonblock(c->err);
  if (inlen) buf_add(&c->input, input, inlen);
  if (!inlen) { close(c->in); c->in = -1; }
  c->next = children;
  children = c;
}

/* Parses and starts every complete request in `req`, keeping a partial one. */
static void take_requests(struct buf *req) {
  size_t off = 0;
  while (req->len - off >= 4) {
    uint32_t len = get_u32(req->p + off);
    if (req->len - off - 4 < len) break;
    const char *p = req->p + off + 4, *end = p + len;
    uint32_t id = get_u32(p);
    p += 4;
    uint32_t nslen = get_u32(p);
    p += 4;
    char *ns = strndup(p, nslen);
    p += nslen;
    uint32_t argc = get_u32(p);
    p += 4;
    char **argv = calloc(argc + 1, sizeof *argv);
    for (uint32_t i = 0; i < argc; i++) {
      uint32_t n = get_u32(p);
      p += 4;
      argv[i] = strndup(p, n);
      p += n;
    }
    uint32_t inlen = get_u32(p);
    p += 4;
    if (p + inlen != end || argc == 0) {
      fprintf(stderr, "berth-spawn: malformed request\n");
      exit(1);
    }
    start(id, ns, argv, p, inlen);
    for (uint32_t i = 0; i < argc; i++) free(argv[i]);
    free(argv);
    free(ns);
    off += 4 + len;
  }
  memmove(req->p, req->p + off, req->len - off);
  req->len -= off;
}

static void drain(int *fd, struct buf *into) {
  char tmp[65536];
  for (;;) {
    ssize_t n = read(*fd, tmp, sizeof tmp);
    if (n > 0) { buf_add(into, tmp, (size_t)n); continue; }
    if (n < 0 && (errno == EINTR)) continue;
    if (n < 0 && errno == EAGAIN) return;
    close(*fd);
    *fd = -1;
    return;
  }
}

static void feed(struct child *c) {
  while (c->input_off < c->input.len) {
    ssize_t n = write(c->in, c->input.p + c->input_off, c->input.len - c->input_off);
    if (n > 0) { c->input_off += (size_t)n; continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    break; /* EPIPE: the child does not read its input */
  }
  close(c->in);
  c->in = -1;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) { perror("berth-spawn: signalfd"); return 1; }
  struct buf req = { 0 };
  int input_open = 1;
  for (;;) {
    size_t n = 2;
    for (struct child *c = children; c; c = c->next) n += 3;
    struct pollfd *fds = calloc(n, sizeof *fds);
    size_t k = 0;
    fds[k++] = (struct pollfd){ .fd = input_open ? 0 : -1, .events = POLLIN };
    fds[k++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
    for (struct child *c = children; c; c = c->next) {
      fds[k++] = (struct pollfd){ .fd = c->in, .events = POLLOUT };
      fds[k++] = (struct pollfd){ .fd = c->out, .events = POLLIN };
      fds[k++] = (struct pollfd){ .fd = c->err, .events = POLLIN };
    }
    if (!input_open && !children) return 0;
    if (poll(fds, k, -1) < 0 && errno != EINTR) { perror("berth-spawn: poll"); return 1; }
    if (fds[0].revents) {
      char tmp[65536];
      ssize_t r = read(0, tmp, sizeof tmp);
      if (r > 0) { buf_add(&req, tmp, (size_t)r); take_requests(&req); }
      else if (r == 0 || (errno != EINTR && errno != EAGAIN)) return 0; /* berthd is gone */
    }
    free(fds);
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) { /* drained; reaped below */ }
    for (struct child *c = children; c; c = c->next) {
      if (c->in >= 0) feed(c);
      if (c->out >= 0) drain(&c->out, &c->stdout_buf);
      if (c->err >= 0) drain(&c->err, &c->stderr_buf);
      if (!c->reaped) {
        int st;
        if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
          c->reaped = 1;
          c->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
      }
    }
    /* Done when reaped and both outputs closed, as Node's 'close' event. */
    for (struct child **pp = &children; *pp;) {
      struct child *c = *pp;
      if (c->reaped && c->out < 0 && c->err < 0) {
        if (c->in >= 0) close(c->in);
        respond(c->id, c->status, &c->stdout_buf, &c->stderr_buf);
        free(c->input.p);
        free(c->stdout_buf.p);
        free(c->stderr_buf.p);
        *pp = c->next;
        free(c);
      } else {
        pp = &c->next;
      }
    }
  }
}
