/*
 * berth-attach: bridges conmon's attach socket (AF_UNIX SOCK_SEQPACKET, which Node's net module
 * cannot open) to this process's stdin and stdout, so berthd can attach with a plain child process.
 *
 * usage: berth-attach SOCKET_PATH
 *   stdin  -> raw bytes for the container's stdin; on EOF the write side is shut down, which makes
 *             conmon close the container's stdin (unless it runs with --leave-stdin-open).
 *   stdout <- every packet conmon sends, as a frame: 1 byte stream id (2 stdout, 3 stderr),
 *             4 bytes big-endian length, then the payload. Exits 0 when conmon closes the socket.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PACKET_MAX 32768

static int write_all(int fd, const void *buf, size_t len) {
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR) continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: berth-attach SOCKET_PATH\n");
		return 2;
	}
	/* sun_path is 108 bytes; reach long paths through the directory's /proc/self/fd entry. */
	char dir[4096];
	snprintf(dir, sizeof dir, "%s", argv[1]);
	char *slash = strrchr(dir, '/');
	const char *base = argv[1];
	int dirfd = -1;
	if (slash) {
		*slash = 0;
		base = slash + 1;
		dirfd = open(dir[0] ? dir : "/", O_PATH | O_CLOEXEC);
		if (dirfd < 0) {
			fprintf(stderr, "berth-attach: open %s: %s\n", dir, strerror(errno));
			return 1;
		}
	}
	struct sockaddr_un addr = {0};
	addr.sun_family = AF_UNIX;
	if (dirfd >= 0)
		snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d/%s", dirfd, base);
	else
		snprintf(addr.sun_path, sizeof addr.sun_path, "%s", base);

	int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
		fprintf(stderr, "berth-attach: connect %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	/* Tell the parent we are connected: output produced from now on reaches us. */
	if (write_all(1, "\0\0\0\0\0", 5) < 0) return 1;

	static char buf[PACKET_MAX + 5];
	struct pollfd fds[2] = {{.fd = sock, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
	int stdin_open = 1;
	for (;;) {
		int n = poll(fds, stdin_open ? 2 : 1, -1);
		if (n < 0) {
			if (errno == EINTR) continue;
			return 1;
		}
		if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = recv(sock, buf + 4, PACKET_MAX + 1, 0);
			if (r < 0 && errno == EINTR) continue;
			if (r <= 0) return 0;
			/* buf[4] is conmon's stream byte; re-frame as id + length + payload. */
			uint32_t len = (uint32_t)(r - 1);
			buf[0] = buf[4];
			buf[1] = (char)(len >> 24);
			buf[2] = (char)(len >> 16);
			buf[3] = (char)(len >> 8);
			buf[4] = (char)len;
			if (write_all(1, buf, (size_t)r + 4) < 0) return 0;
		}
		if (stdin_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			ssize_t r = read(0, buf, PACKET_MAX);
			if (r < 0 && errno == EINTR) continue;
			if (r <= 0) {
				stdin_open = 0;
				shutdown(sock, SHUT_WR);
				continue;
			}
			if (send(sock, buf, (size_t)r, MSG_NOSIGNAL) < 0) return 0;
		}
	}
}
