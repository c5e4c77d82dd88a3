/*
 * A fwatchdog worker in C, no runtime: each request's body comes back reversed, byte for
 * byte, as text/plain. Protocol: docs/worker-protocol.md (mode=worker).
 *
 *   cc -O2 -o worker worker.c
 *   mode=worker fprocess=./worker fwatchdog
 *
 * stdin carries requests (a JSON head line, then `length` body bytes); descriptor 3 takes
 * the ready line and the responses (a JSON head line, then the body). stdout and stderr go
 * to the watchdog's log.
 *
 * The head line is not parsed as JSON: find_length() walks it just far enough to find the
 * top-level "length" key (see README.md for what that parser accepts).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define RESPONSES 3
/* Refuse bodies above 1 GiB: the watchdog's own limit (max_body_size) is far below. */
#define MAX_LENGTH (1L << 30)

/* Write all of buf to fd, across short writes and EINTR (and EAGAIN, should the
 * descriptor be non-blocking). Exits when the watchdog has gone. */
static void write_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w > 0) {
			buf += w;
			n -= (size_t)w;
		} else if (w < 0 && errno == EINTR) {
			continue;
		} else if (w < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };
			poll(&p, 1, -1);
		} else {
			perror("worker: write to descriptor 3");
			exit(1);
		}
	}
}

/*
 * The value of the top-level "length" key of a JSON object, or -1 when there is none (or
 * it is not a whole number). Strings are skipped with their escapes, so a header or a path
 * that contains "length": cannot fool it, nor can a "length" key nested in "env".
 */
static long find_length(const char *s, size_t n)
{
	int depth = 0;
	size_t i = 0;
	while (i < n) {
		char c = s[i];
		if (c == '"') {
			size_t start = ++i;
			while (i < n && s[i] != '"')
				i += (s[i] == '\\') ? 2 : 1;
			if (i >= n)
				return -1;
			size_t len = i - start;
			i++; /* the closing quote */
			if (depth != 1 || len != 6 || memcmp(s + start, "length", 6) != 0)
				continue;
			while (i < n && (s[i] == ' ' || s[i] == '\t'))
				i++;
			if (i >= n || s[i] != ':')
				continue; /* a value "length", not a key */
			i++;
			while (i < n && (s[i] == ' ' || s[i] == '\t'))
				i++;
			if (i >= n || s[i] < '0' || s[i] > '9')
				return -1;
			long v = 0;
			while (i < n && s[i] >= '0' && s[i] <= '9') {
				v = v * 10 + (s[i] - '0');
				if (v > MAX_LENGTH)
					return -1;
				i++;
			}
			return v;
		}
		if (c == '{' || c == '[')
			depth++;
		else if (c == '}' || c == ']')
			depth--;
		i++;
	}
	return -1;
}

int main(void)
{
	/* The response stream must not leak into programs this one might start. */
	fcntl(RESPONSES, F_SETFD, FD_CLOEXEC);
	static const char ready[] = "{\"ready\":true}\n";
	write_all(RESPONSES, ready, sizeof ready - 1);
	fprintf(stderr, "worker %ld: ready\n", (long)getpid());

	char *line = NULL, *body = NULL;
	size_t line_cap = 0, body_cap = 0;
	unsigned long served = 0;
	for (;;) {
		ssize_t got = getline(&line, &line_cap, stdin);
		if (got <= 0)
			return 0; /* end of input: the watchdog is done with this worker */
		if (line[got - 1] != '\n')
			return 0; /* cut short */
		long length = find_length(line, (size_t)got);
		if (length < 0) {
			fprintf(stderr, "worker: no length in the request head: %.200s\n", line);
			return 1;
		}
		if ((size_t)length > body_cap) {
			body = realloc(body, (size_t)length);
			if (!body) {
				perror("worker: realloc");
				return 1;
			}
			body_cap = (size_t)length;
		}
		if (fread(body, 1, (size_t)length, stdin) != (size_t)length)
			return 0; /* end of input inside a body */

		for (long a = 0, b = length - 1; a < b; a++, b--) {
			char t = body[a];
			body[a] = body[b];
			body[b] = t;
		}
		served++;

		char head[160];
		int h = snprintf(head, sizeof head,
			"{\"status\":200,\"headers\":[[\"content-type\",\"text/plain\"],"
			"[\"x-worker-pid\",\"%ld\"],[\"x-worker-requests\",\"%lu\"]],\"length\":%ld}\n",
			(long)getpid(), served, length);
		/* Head and body in one write when the pipe takes them: one wake-up of the
		 * watchdog instead of two. */
		struct iovec iov[2] = { { head, (size_t)h }, { body, (size_t)length } };
		ssize_t w = writev(RESPONSES, iov, 2);
		if (w < 0)
			w = 0;
		if ((size_t)w < (size_t)h) {
			write_all(RESPONSES, head + w, (size_t)h - (size_t)w);
			write_all(RESPONSES, body, (size_t)length);
		} else {
			write_all(RESPONSES, body + (w - h), (size_t)length - (size_t)(w - h));
		}
	}
}
