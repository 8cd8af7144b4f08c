/*
 * origin.c - a tiny HTTP/1.1 origin server for the Sluice load benchmark.
 *
 * Single-threaded, level-triggered epoll, non-blocking sockets, keep-alive,
 * minimal pipelining (every complete request in the input buffer is answered
 * in order; reading pauses while output is pending).
 *
 * Endpoints (fixed bodies, always with Content-Length):
 *   GET  /small   13-byte body "Hello, world\n"
 *   GET  /4k      4096-byte body
 *   GET  /64k     65536-byte body
 *   GET  /healthz "ok\n"
 *   POST /echo    echoes the request body (Content-Length or chunked)
 * Anything else: 404. HEAD is answered like GET without a body.
 * "Connection: close" (or HTTP/1.0 without keep-alive) closes after the
 * response is written.
 *
 * Build: cc -O2 -o origin origin.c
 * Usage: origin PORT [BIND_ADDR]   (BIND_ADDR defaults to 127.0.0.1)
 * Prints "ready <port>" on stdout once listening.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define READ_CHUNK 65536
#define MAX_HEADER 16384
#define MAX_BODY (16 * 1024 * 1024)

typedef struct {
    char *data;
    size_t len, cap, off; /* off: consumed prefix (input) / written prefix (output) */
} buf_t;

typedef struct {
    int fd;
    buf_t in, out;
    int close_after; /* close once out is drained */
    int want_out;    /* EPOLLOUT currently registered */
} conn_t;

static int epfd;
static char body_small[] = "Hello, world\n";
static char *body_4k, *body_64k;
static volatile sig_atomic_t stop_flag = 0;

static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static int buf_reserve(buf_t *b, size_t extra) {
    if (b->len + extra <= b->cap) return 0;
    /* compact first */
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) return 0;
    }
    size_t ncap = b->cap ? b->cap : 4096;
    while (ncap < b->len + extra) ncap *= 2;
    char *n = realloc(b->data, ncap);
    if (!n) return -1;
    b->data = n;
    b->cap = ncap;
    return 0;
}

static int buf_append(buf_t *b, const char *p, size_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static void conn_free(conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in.data);
    free(c->out.data);
    free(c);
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* case-insensitive search for header `name` in [hdr, hdr_end); returns value start or NULL */
static const char *find_header(const char *hdr, const char *hdr_end, const char *name, size_t *vlen) {
    size_t nlen = strlen(name);
    const char *p = hdr;
    /* skip request line */
    const char *eol = memmem(p, hdr_end - p, "\r\n", 2);
    if (!eol) return NULL;
    p = eol + 2;
    while (p < hdr_end) {
        eol = memmem(p, hdr_end - p, "\r\n", 2);
        if (!eol) eol = hdr_end;
        if ((size_t)(eol - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            *vlen = ve - v;
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

static int token_in(const char *v, size_t vlen, const char *tok) {
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= vlen; i++) {
        if (strncasecmp(v + i, tok, tl) == 0) return 1;
    }
    return 0;
}

static int respond(conn_t *c, int status, const char *body, size_t blen, int head_only, int close_conn) {
    char hdr[256];
    const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found" : status == 400 ? "Bad Request" : "Error";
    int n = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nServer: origin\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n",
                     status, reason, blen, close_conn ? "Connection: close\r\n" : "");
    if (buf_append(&c->out, hdr, n) < 0) return -1;
    if (!head_only && blen && buf_append(&c->out, body, blen) < 0) return -1;
    return 0;
}

/*
 * Decode a chunked body starting at p (len avail). Returns bytes consumed
 * (including trailer) when complete, 0 if incomplete, -1 on error. Decoded
 * data is appended to *dec.
 */
static long decode_chunked(const char *p, size_t avail, buf_t *dec) {
    size_t pos = 0;
    dec->len = 0;
    for (;;) {
        const char *eol = memmem(p + pos, avail - pos, "\r\n", 2);
        if (!eol) return 0;
        char *endp;
        unsigned long sz = strtoul(p + pos, &endp, 16);
        if (endp == p + pos) return -1;
        pos = (eol - p) + 2;
        if (sz == 0) {
            /* trailers until empty line */
            for (;;) {
                const char *e2 = memmem(p + pos, avail - pos, "\r\n", 2);
                if (!e2) return 0;
                size_t l = e2 - (p + pos);
                pos += l + 2;
                if (l == 0) return (long)pos;
            }
        }
        if (sz > MAX_BODY || dec->len + sz > MAX_BODY) return -1;
        if (avail - pos < sz + 2) return 0;
        if (buf_append(dec, p + pos, sz) < 0) return -1;
        pos += sz + 2;
    }
}

/* Parse and answer all complete requests in c->in. Returns -1 to drop the connection. */
static int process(conn_t *c) {
    static buf_t dec;
    while (!c->close_after) {
        const char *start = c->in.data + c->in.off;
        size_t avail = c->in.len - c->in.off;
        if (avail == 0) break;
        const char *hend = memmem(start, avail, "\r\n\r\n", 4);
        if (!hend) {
            if (avail > MAX_HEADER) return -1;
            break;
        }
        size_t hlen = (hend - start) + 4;
        /* request line */
        const char *sp1 = memchr(start, ' ', hlen);
        if (!sp1) return -1;
        const char *sp2 = memchr(sp1 + 1, ' ', hlen - (sp1 + 1 - start));
        if (!sp2) return -1;
        size_t mlen = sp1 - start;
        const char *path = sp1 + 1;
        size_t plen = sp2 - path;
        int http10 = (hend - sp2 > 9) && strncmp(sp2 + 1, "HTTP/1.0", 8) == 0;

        size_t vlen;
        const char *v;
        int close_conn = http10;
        if ((v = find_header(start, hend + 2, "Connection", &vlen))) {
            if (token_in(v, vlen, "close")) close_conn = 1;
            else if (token_in(v, vlen, "keep-alive")) close_conn = 0;
        }
        int chunked = 0;
        size_t clen = 0;
        if ((v = find_header(start, hend + 2, "Transfer-Encoding", &vlen)) && token_in(v, vlen, "chunked")) {
            chunked = 1;
        } else if ((v = find_header(start, hend + 2, "Content-Length", &vlen))) {
            char tmp[32];
            if (vlen == 0 || vlen >= sizeof tmp) return -1;
            memcpy(tmp, v, vlen);
            tmp[vlen] = 0;
            char *endp;
            unsigned long long cl = strtoull(tmp, &endp, 10);
            if (*endp || cl > MAX_BODY) return -1;
            clen = (size_t)cl;
        }

        const char *body = hend + 4;
        size_t consumed;
        size_t blen;
        if (chunked) {
            long r = decode_chunked(body, avail - hlen, &dec);
            if (r < 0) return -1;
            if (r == 0) break; /* need more */
            consumed = hlen + (size_t)r;
            body = dec.data;
            blen = dec.len;
        } else {
            if (avail - hlen < clen) break; /* need more */
            consumed = hlen + clen;
            blen = clen;
        }

        int is_get = mlen == 3 && memcmp(start, "GET", 3) == 0;
        int is_head = mlen == 4 && memcmp(start, "HEAD", 4) == 0;
        int is_post = mlen == 4 && memcmp(start, "POST", 4) == 0;
        /* ignore query strings */
        const char *q = memchr(path, '?', plen);
        if (q) plen = q - path;
#define PATH_IS(s) (plen == sizeof(s) - 1 && memcmp(path, s, plen) == 0)
        int rc;
        if ((is_get || is_head) && PATH_IS("/small"))
            rc = respond(c, 200, body_small, sizeof body_small - 1, is_head, close_conn);
        else if ((is_get || is_head) && PATH_IS("/4k"))
            rc = respond(c, 200, body_4k, 4096, is_head, close_conn);
        else if ((is_get || is_head) && PATH_IS("/64k"))
            rc = respond(c, 200, body_64k, 65536, is_head, close_conn);
        else if ((is_get || is_head) && (PATH_IS("/healthz") || PATH_IS("/")))
            rc = respond(c, 200, "ok\n", 3, is_head, close_conn);
        else if (is_post && PATH_IS("/echo"))
            rc = respond(c, 200, body, blen, 0, close_conn);
        else
            rc = respond(c, 404, "not found\n", 10, is_head, close_conn);
#undef PATH_IS
        if (rc < 0) return -1;
        c->in.off += consumed;
        if (close_conn) c->close_after = 1;
    }
    if (c->in.off == c->in.len) c->in.off = c->in.len = 0;
    return 0;
}

/* Write pending output. Returns -1 to drop, 0 otherwise. */
static int flush_out(conn_t *c) {
    while (c->out.off < c->out.len) {
        ssize_t n = write(c->fd, c->out.data + c->out.off, c->out.len - c->out.off);
        if (n > 0) {
            c->out.off += n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return -1;
    }
    int pending = c->out.off < c->out.len;
    if (!pending) c->out.off = c->out.len = 0;
    if (!pending && c->close_after) return -1; /* done: close */
    /* while output is pending, wait for writability and stop reading (backpressure) */
    if (pending != c->want_out) {
        struct epoll_event ev = {.events = pending ? EPOLLOUT : EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = pending;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [BIND_ADDR]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    const char *addr = argc > 2 ? argv[2] : "127.0.0.1";
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    body_4k = malloc(4096);
    body_64k = malloc(65536);
    for (int i = 0; i < 65536; i++) {
        char ch = "abcdefghijklmnopqrstuvwxyz0123456789"[i % 36];
        if (i % 64 == 63) ch = '\n';
        if (i < 4096) body_4k[i] = ch;
        body_64k[i] = ch;
    }

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", addr);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    set_nonblock(lfd);
    epfd = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev);
    printf("ready %d\n", port);
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    static char rbuf[READ_CHUNK];
    while (!stop_flag) {
        int n = epoll_wait(epfd, evs, MAX_EVENTS, 500);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) { /* accept as many as are pending */
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_t *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (evs[i].events & (EPOLLERR)) {
                conn_free(c);
                continue;
            }
            if (c->want_out) {
                if (flush_out(c) < 0) { conn_free(c); continue; }
                if (c->want_out) continue;
                /* output drained: answer anything already buffered */
                if (process(c) < 0 || flush_out(c) < 0) conn_free(c);
                continue;
            }
            ssize_t r = read(c->fd, rbuf, sizeof rbuf);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                conn_free(c);
                continue;
            }
            if (r < 0) continue;
            if (buf_append(&c->in, rbuf, r) < 0 || process(c) < 0 || flush_out(c) < 0) {
                conn_free(c);
                continue;
            }
        }
    }
    return 0;
}
