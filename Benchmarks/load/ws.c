/*
 * ws.c - WebSocket echo origin and load generator for the `ws` scenario of
 * the Sluice load benchmark (bench.py). Python would be the bottleneck at the
 * message rates a proxy reaches, so both ends are C.
 *
 *   ws server PORT
 *       Single-threaded epoll. A request with "Upgrade: websocket" gets a 101
 *       (Sec-WebSocket-Accept computed, RFC 6455 section 4.2.2), then every
 *       data frame is echoed unmasked with its opcode and FIN, a ping gets a
 *       pong, a Close gets a Close with the same code and the connection
 *       ends. Any other request gets 200 "Hello, world\n" (keep-alive): the
 *       proxies' readiness probe and warm-up. Prints "ready PORT".
 *
 *   ws client PORT PATH CONNS SECONDS SIZE [DEPTH]
 *       Opens CONNS WebSocket connections (handshake checked, Accept
 *       verified), then on each keeps DEPTH (default 1) masked binary
 *       messages of SIZE bytes in flight for SECONDS: a message is sent when
 *       the previous echo arrived. Every echo is compared with what was sent
 *       (its first 8 bytes are the connection's sequence number). Then sends
 *       Close 1000 on each and waits (up to 2 s) for the Close replies.
 *       Prints one line of key=value: messages (echoes received and
 *       verified), elapsed_s, rate, p50_us, p99_us (round trip, from send to
 *       echo), errors (bad echoes, unexpected closes, handshake failures),
 *       opened, closed_clean.
 *
 * Build: cc -O2 -o ws ws.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define READ_CHUNK 65536
#define MAX_HEAD 16384
#define GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ------------------------------------------------------------------ SHA-1, base64 */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    unsigned char *m = calloc(total, 1);
    memcpy(m, msg, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) m[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)m[off + 4 * i] << 24 | (uint32_t)m[off + 4 * i + 1] << 16 |
                   (uint32_t)m[off + 4 * i + 2] << 8 | m[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6; }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d; d = c; c = rol(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    free(m);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void base64(const unsigned char *in, size_t n, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        out[o++] = i + 1 < n ? t[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = 0;
}

/* Sec-WebSocket-Accept for a key (RFC 6455 section 4.2.2, item 5.4). */
static void accept_for(const char *key, size_t keylen, char out[29]) {
    char buf[128];
    if (keylen > 60) keylen = 60;
    memcpy(buf, key, keylen);
    memcpy(buf + keylen, GUID, sizeof(GUID) - 1);
    unsigned char digest[20];
    sha1((unsigned char *)buf, keylen + sizeof(GUID) - 1, digest);
    base64(digest, 20, out);
}

/* ------------------------------------------------------------------ buffers, sockets */

typedef struct {
    unsigned char *data;
    size_t len, cap, off;
} buf_t;

static int buf_append(buf_t *b, const void *p, size_t n) {
    if (b->off > 0 && b->off == b->len) b->off = b->len = 0;
    if (b->len + n > b->cap) {
        if (b->off > 0) {
            memmove(b->data, b->data + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        size_t ncap = b->cap ? b->cap : 4096;
        while (ncap < b->len + n) ncap *= 2;
        unsigned char *d = realloc(b->data, ncap);
        if (!d) return -1;
        b->data = d;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static size_t buf_avail(const buf_t *b) { return b->len - b->off; }

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int epfd;
static volatile sig_atomic_t stop_flag = 0;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A complete frame at b's read position: 1 and its parts, 0 if incomplete, -1 if malformed. */
typedef struct {
    int fin, opcode, masked;
    unsigned char mask[4];
    uint64_t len;
    size_t header, total;
} frame_t;

static int parse_frame(const buf_t *b, frame_t *f) {
    const unsigned char *p = b->data + b->off;
    size_t n = buf_avail(b);
    if (n < 2) return 0;
    f->fin = p[0] >> 7;
    f->opcode = p[0] & 0x0F;
    if (p[0] & 0x70) return -1; /* no extension may set RSV bits here */
    f->masked = p[1] >> 7;
    uint64_t len = p[1] & 0x7F;
    size_t h = 2;
    if (len == 126) {
        if (n < 4) return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        h = 4;
    } else if (len == 127) {
        if (n < 10) return 0;
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | p[2 + i];
        h = 10;
    }
    if (len > (16u << 20)) return -1;
    if (f->masked) {
        if (n < h + 4) return 0;
        memcpy(f->mask, p + h, 4);
        h += 4;
    }
    if (n < h + len) return 0;
    f->len = len;
    f->header = h;
    f->total = h + len;
    return 1;
}

static size_t frame_header(unsigned char *out, int fin, int opcode, uint64_t len, const unsigned char *mask) {
    size_t h = 0;
    out[h++] = (unsigned char)((fin ? 0x80 : 0) | opcode);
    unsigned char m = mask ? 0x80 : 0;
    if (len < 126) {
        out[h++] = m | (unsigned char)len;
    } else if (len < 65536) {
        out[h++] = m | 126;
        out[h++] = (unsigned char)(len >> 8);
        out[h++] = (unsigned char)len;
    } else {
        out[h++] = m | 127;
        for (int i = 7; i >= 0; i--) out[h++] = (unsigned char)(len >> (8 * i));
    }
    if (mask) {
        memcpy(out + h, mask, 4);
        h += 4;
    }
    return h;
}

/* ------------------------------------------------------------------ server */

typedef struct {
    int fd, ws, want_out, close_after;
    buf_t in, out;
} sconn_t;

static void s_close(sconn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in.data);
    free(c->out.data);
    free(c);
}

/* Writes what it can; registers EPOLLOUT for the rest. -1: the connection is gone. */
static int s_flush(sconn_t *c) {
    while (buf_avail(&c->out) > 0) {
        ssize_t w = write(c->fd, c->out.data + c->out.off, buf_avail(&c->out));
        if (w < 0) {
            if (errno == EAGAIN) break;
            if (errno == EINTR) continue;
            return -1;
        }
        c->out.off += (size_t)w;
    }
    int pending = buf_avail(&c->out) > 0;
    if (pending != c->want_out) {
        struct epoll_event ev = {.events = pending ? EPOLLOUT : EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = pending;
    }
    if (!pending && c->close_after) return -1;
    return 0;
}

static const char *find_header(const char *head, const char *name, size_t *vlen) {
    size_t nlen = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ' || *v == '\t') v++;
            const char *e = strstr(v, "\r\n");
            while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
            *vlen = (size_t)(e - v);
            return v;
        }
    }
    return NULL;
}

/* Handles every complete request or frame in c->in. -1: close the connection. */
static int s_process(sconn_t *c) {
    for (;;) {
        if (!c->ws) {
            size_t n = buf_avail(&c->in);
            unsigned char *p = c->in.data + c->in.off;
            unsigned char *end = memmem(p, n, "\r\n\r\n", 4);
            if (!end) return n > MAX_HEAD ? -1 : 0;
            size_t hlen = (size_t)(end - p) + 4;
            char head[MAX_HEAD + 1];
            memcpy(head, p, hlen);
            head[hlen] = 0;
            c->in.off += hlen;
            size_t ulen = 0, klen = 0;
            const char *up = find_header(head, "Upgrade", &ulen);
            const char *key = find_header(head, "Sec-WebSocket-Key", &klen);
            if (up && ulen == 9 && strncasecmp(up, "websocket", 9) == 0 && key) {
                char acc[29];
                accept_for(key, klen, acc);
                char resp[256];
                int r = snprintf(resp, sizeof resp,
                                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acc);
                buf_append(&c->out, resp, (size_t)r);
                c->ws = 1;
                continue;
            }
            static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\n"
                                     "Hello, world\n";
            buf_append(&c->out, ok, sizeof ok - 1);
            continue;
        }
        frame_t f;
        int r = parse_frame(&c->in, &f);
        if (r < 0) return -1;
        if (r == 0) return 0;
        unsigned char *payload = c->in.data + c->in.off + f.header;
        if (f.masked)
            for (uint64_t i = 0; i < f.len; i++) payload[i] ^= f.mask[i & 3];
        unsigned char hdr[14];
        int opcode = f.opcode == 0x9 ? 0xA : f.opcode;
        if (f.opcode != 0xA) { /* a pong is not answered */
            size_t h = frame_header(hdr, f.fin, opcode, f.len, NULL);
            buf_append(&c->out, hdr, h);
            buf_append(&c->out, payload, f.len);
        }
        c->in.off += f.total;
        if (f.opcode == 0x8) {
            c->close_after = 1;
            return 0;
        }
    }
}

static int run_server(int port) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    set_nonblock(lfd);
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    printf("ready %d\n", port);
    fflush(stdout);
    struct epoll_event evs[MAX_EVENTS];
    unsigned char chunk[READ_CHUNK];
    while (!stop_flag) {
        int n = epoll_wait(epfd, evs, MAX_EVENTS, 500);
        for (int i = 0; i < n; i++) {
            sconn_t *c = evs[i].data.ptr;
            if (c == NULL) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                    if (fd < 0) break;
                    set_nodelay(fd);
                    sconn_t *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e2);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                if (s_flush(c) < 0) {
                    s_close(c);
                    continue;
                }
                if (c->want_out) continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = read(c->fd, chunk, sizeof chunk);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    s_close(c);
                    continue;
                }
                if (r > 0) buf_append(&c->in, chunk, (size_t)r);
                if (s_process(c) < 0 || s_flush(c) < 0) s_close(c);
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ client */

#define HIST_US 200000 /* 1 us buckets up to 200 ms, then one overflow bucket */

typedef struct {
    int fd, state; /* 0 handshake, 1 open, 2 closing, 3 done */
    buf_t in, out;
    uint64_t seq_sent, seq_recv;
    double sent_at[64];
    int want_out;
} cconn_t;

static uint32_t *hist;
static uint64_t messages, errors, opened, closed_clean;
static int msg_size, depth;
static unsigned char *payload_buf;
static const unsigned char MASK[4] = {0x5a, 0xa5, 0x3c, 0xc3};
static char expected_accept[29];

static void c_flush(cconn_t *c) {
    while (buf_avail(&c->out) > 0) {
        ssize_t w = write(c->fd, c->out.data + c->out.off, buf_avail(&c->out));
        if (w < 0) {
            if (errno == EAGAIN) break;
            if (errno == EINTR) continue;
            c->state = 3;
            errors++;
            return;
        }
        c->out.off += (size_t)w;
    }
    int pending = buf_avail(&c->out) > 0;
    if (pending != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (pending ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = pending;
    }
}

static void fill_payload(uint64_t seq, int fd) {
    memcpy(payload_buf, &seq, 8);
    memcpy(payload_buf + 8, &fd, 4);
    for (int i = 12; i < msg_size; i++) payload_buf[i] = (unsigned char)(seq + (uint64_t)i);
}

static void c_send_message(cconn_t *c) {
    unsigned char hdr[14];
    fill_payload(c->seq_sent, c->fd);
    size_t h = frame_header(hdr, 1, 0x2, (uint64_t)msg_size, MASK);
    buf_append(&c->out, hdr, h);
    size_t at = c->out.len;
    buf_append(&c->out, payload_buf, (size_t)msg_size);
    for (int i = 0; i < msg_size; i++) c->out.data[at + i] ^= MASK[i & 3];
    c->sent_at[c->seq_sent % 64] = now_s();
    c->seq_sent++;
}

static void c_send_close(cconn_t *c) {
    unsigned char hdr[14], body[2] = {0x03, 0xE8};
    size_t h = frame_header(hdr, 1, 0x8, 2, MASK);
    buf_append(&c->out, hdr, h);
    for (int i = 0; i < 2; i++) body[i] ^= MASK[i];
    buf_append(&c->out, body, 2);
    c->state = 2;
}

static void c_process(cconn_t *c, int sending) {
    if (c->state == 0) {
        size_t n = buf_avail(&c->in);
        unsigned char *p = c->in.data + c->in.off;
        unsigned char *end = memmem(p, n, "\r\n\r\n", 4);
        if (!end) return;
        size_t hlen = (size_t)(end - p) + 4;
        char head[MAX_HEAD + 1];
        if (hlen > MAX_HEAD) { errors++; c->state = 3; return; }
        memcpy(head, p, hlen);
        head[hlen] = 0;
        c->in.off += hlen;
        size_t alen = 0;
        const char *acc = find_header(head, "Sec-WebSocket-Accept", &alen);
        if (strncmp(head, "HTTP/1.1 101", 12) != 0 || !acc || alen != 28 || memcmp(acc, expected_accept, 28) != 0) {
            fprintf(stderr, "handshake failed: %.200s\n", head);
            errors++;
            c->state = 3;
            return;
        }
        c->state = 1;
        opened++;
        if (sending)
            for (int i = 0; i < depth; i++) c_send_message(c);
    }
    for (;;) {
        frame_t f;
        int r = parse_frame(&c->in, &f);
        if (r < 0 || (r == 1 && f.masked)) { errors++; c->state = 3; return; }
        if (r == 0) return;
        unsigned char *pl = c->in.data + c->in.off + f.header;
        if (f.opcode == 0x8) {
            if (c->state == 2) closed_clean++;
            else errors++;
            c->in.off += f.total;
            c->state = 3;
            return;
        }
        if (f.opcode == 0x2 && c->state >= 1) {
            fill_payload(c->seq_recv, c->fd);
            if (f.len != (uint64_t)msg_size || memcmp(pl, payload_buf, (size_t)msg_size) != 0) {
                errors++;
            } else {
                messages++;
                double us = (now_s() - c->sent_at[c->seq_recv % 64]) * 1e6;
                hist[us < HIST_US ? (int)us : HIST_US]++;
            }
            c->seq_recv++;
            if (sending && c->state == 1) c_send_message(c);
        }
        c->in.off += f.total;
    }
}

static uint64_t hist_pct(double q, uint64_t total) {
    uint64_t want = (uint64_t)(q * (double)total + 0.999999), acc = 0;
    if (want == 0) want = 1;
    for (int i = 0; i <= HIST_US; i++) {
        acc += hist[i];
        if (acc >= want) return (uint64_t)i;
    }
    return HIST_US;
}

static int run_client(int port, const char *path, int conns, double seconds) {
    hist = calloc(HIST_US + 1, sizeof *hist);
    payload_buf = malloc((size_t)msg_size + 16);
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    accept_for(key, strlen(key), expected_accept);
    epfd = epoll_create1(0);
    cconn_t **cs = calloc((size_t)conns, sizeof *cs);
    char req[512];
    int rlen = snprintf(req, sizeof req,
                        "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, port, key);
    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("connect");
            errors++;
            close(fd);
            continue;
        }
        set_nonblock(fd);
        set_nodelay(fd);
        cconn_t *c = calloc(1, sizeof *c);
        c->fd = fd;
        cs[i] = c;
        buf_append(&c->out, req, (size_t)rlen);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
        c_flush(c);
    }
    struct epoll_event evs[MAX_EVENTS];
    unsigned char chunk[READ_CHUNK];
    double t0 = now_s(), t_end = t0 + seconds, t_stop = 0, elapsed = 0;
    uint64_t messages_at_end = 0;
    int sending = 1;
    for (;;) {
        double t = now_s();
        if (sending && (t >= t_end || stop_flag)) {
            /* Time is up: what arrives from now on is not counted; close every connection. */
            sending = 0;
            elapsed = t - t0;
            messages_at_end = messages;
            for (int i = 0; i < conns; i++)
                if (cs[i] && cs[i]->state == 1) {
                    c_send_close(cs[i]);
                    c_flush(cs[i]);
                }
            t_stop = t;
        }
        if (!sending) {
            int live = 0;
            for (int i = 0; i < conns; i++)
                if (cs[i] && cs[i]->state < 3) live++;
            if (live == 0 || t - t_stop > 2.0) break;
        }
        int n = epoll_wait(epfd, evs, MAX_EVENTS, 50);
        for (int i = 0; i < n; i++) {
            cconn_t *c = evs[i].data.ptr;
            if (c->state == 3) continue;
            if (evs[i].events & EPOLLOUT) c_flush(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = read(c->fd, chunk, sizeof chunk);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    if (sending) errors++; /* the proxy or origin ended a session under load */
                    c->state = 3;
                } else if (r > 0) {
                    buf_append(&c->in, chunk, (size_t)r);
                    c_process(c, sending);
                    if (c->state < 3) c_flush(c);
                }
            }
            if (c->state == 3) {
                epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
            }
        }
    }
    uint64_t counted = messages_at_end;
    printf("messages=%llu elapsed_s=%.3f rate=%.1f p50_us=%llu p99_us=%llu errors=%llu opened=%llu "
           "closed_clean=%llu conns=%d size=%d depth=%d\n",
           (unsigned long long)counted, elapsed, counted / (elapsed > 0 ? elapsed : 1),
           (unsigned long long)hist_pct(0.50, messages), (unsigned long long)hist_pct(0.99, messages),
           (unsigned long long)errors, (unsigned long long)opened, (unsigned long long)closed_clean, conns,
           msg_size, depth);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    if (argc >= 3 && strcmp(argv[1], "server") == 0) return run_server(atoi(argv[2]));
    if (argc >= 7 && strcmp(argv[1], "client") == 0) {
        msg_size = atoi(argv[6]);
        depth = argc >= 8 ? atoi(argv[7]) : 1;
        if (msg_size < 16 || msg_size > (1 << 20) || depth < 1 || depth > 64) {
            fprintf(stderr, "SIZE must be 16..1048576 and DEPTH 1..64\n");
            return 2;
        }
        return run_client(atoi(argv[2]), argv[3], atoi(argv[4]), atof(argv[5]));
    }
    fprintf(stderr, "usage: ws server PORT | ws client PORT PATH CONNS SECONDS SIZE [DEPTH]\n");
    return 2;
}
