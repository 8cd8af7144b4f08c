/*
 * tlsstat.c: an LD_PRELOAD shim that counts the TLS handshakes a load generator completes, and how
 * many of them resumed a session. bench.py loads it into wrk and h2load in the TLS scenarios, so
 * every cell says, from the client's side and the same way for every proxy, how many handshakes it
 * took (tls-close: one per request?) and whether the server accepted session resumption.
 *
 *   cc -O2 -shared -fPIC -o tlsstat.so tlsstat.c -ldl
 *   LD_PRELOAD=./tlsstat.so wrk ... https://...   # at exit, on stderr:
 *   tlsstat: handshakes=N resumed=M version=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256 alpn=h2 no_resume=0
 *
 * wrk calls SSL_connect, h2load SSL_do_handshake (SSL_connect may call SSL_do_handshake through the
 * PLT: a thread-local depth counts the outermost call only). A handshake counts when the call returns
 * 1. version/cipher/alpn are those of the last handshake. No OpenSSL headers needed: the few
 * functions used are declared here (OpenSSL 1.1 and 3 export them all).
 *
 * TLSSTAT_NO_RESUME=1: full handshakes only. wrk keeps one SSL object per connection slot and
 * reconnects with SSL_shutdown + SSL_clear + SSL_connect, which keeps the last session (its TLS 1.3
 * ticket) and offers it again: with Connection: close nearly every handshake resumes. With this set,
 * the session is dropped (SSL_set_session(ssl, NULL)) before a handshake starts, so the client offers
 * nothing to resume, whatever the server would accept.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ssl_st SSL;
typedef struct ssl_cipher_st SSL_CIPHER;

static unsigned long handshakes, resumed;
static char last_version[32] = "none", last_cipher[64] = "none", last_alpn[32] = "none";
static __thread int depth;

static int (*real_connect)(SSL *);
static int (*real_do_handshake)(SSL *);
static int (*p_session_reused)(const SSL *);
static int (*p_in_before)(const SSL *);
static int (*p_set_session)(SSL *, void *);
static int no_resume = -1;
static const char *(*p_get_version)(const SSL *);
static const SSL_CIPHER *(*p_get_current_cipher)(const SSL *);
static const char *(*p_cipher_name)(const SSL_CIPHER *);
static void (*p_alpn_selected)(const SSL *, const unsigned char **, unsigned int *);

static void resolve(void) {
    if (real_connect)
        return;
    real_do_handshake = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_do_handshake");
    p_session_reused = (int (*)(const SSL *))dlsym(RTLD_NEXT, "SSL_session_reused");
    p_get_version = (const char *(*)(const SSL *))dlsym(RTLD_NEXT, "SSL_get_version");
    p_get_current_cipher = (const SSL_CIPHER *(*)(const SSL *))dlsym(RTLD_NEXT, "SSL_get_current_cipher");
    p_cipher_name = (const char *(*)(const SSL_CIPHER *))dlsym(RTLD_NEXT, "SSL_CIPHER_get_name");
    p_alpn_selected = (void (*)(const SSL *, const unsigned char **, unsigned int *))dlsym(RTLD_NEXT, "SSL_get0_alpn_selected");
    p_in_before = (int (*)(const SSL *))dlsym(RTLD_NEXT, "SSL_in_before");
    p_set_session = (int (*)(SSL *, void *))dlsym(RTLD_NEXT, "SSL_set_session");
    const char *e = getenv("TLSSTAT_NO_RESUME");
    no_resume = e && *e && strcmp(e, "0") != 0;
    real_connect = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
}

/* Before the first flight of a handshake: forget the session, so none is offered (TLSSTAT_NO_RESUME). */
static void maybe_forget_session(SSL *ssl) {
    if (no_resume == 1 && depth == 1 && p_in_before && p_set_session && p_in_before(ssl))
        p_set_session(ssl, NULL);
}

static void record(SSL *ssl) {
    __sync_fetch_and_add(&handshakes, 1);
    if (p_session_reused && p_session_reused(ssl))
        __sync_fetch_and_add(&resumed, 1);
    if (p_get_version)
        snprintf(last_version, sizeof last_version, "%s", p_get_version(ssl));
    if (p_get_current_cipher && p_cipher_name) {
        const SSL_CIPHER *c = p_get_current_cipher(ssl);
        snprintf(last_cipher, sizeof last_cipher, "%s", c ? p_cipher_name(c) : "none");
    }
    if (p_alpn_selected) {
        const unsigned char *p = NULL;
        unsigned int n = 0;
        p_alpn_selected(ssl, &p, &n);
        if (n >= sizeof last_alpn)
            n = sizeof last_alpn - 1;
        if (p && n) {
            memcpy(last_alpn, p, n);
            last_alpn[n] = 0;
        } else {
            snprintf(last_alpn, sizeof last_alpn, "none");
        }
    }
}

int SSL_connect(SSL *ssl) {
    resolve();
    depth++;
    maybe_forget_session(ssl);
    int r = real_connect ? real_connect(ssl) : -1;
    if (--depth == 0 && r == 1)
        record(ssl);
    return r;
}

int SSL_do_handshake(SSL *ssl) {
    resolve();
    depth++;
    maybe_forget_session(ssl);
    int r = real_do_handshake ? real_do_handshake(ssl) : -1;
    if (--depth == 0 && r == 1)
        record(ssl);
    return r;
}

__attribute__((destructor)) static void report(void) {
    if (handshakes == 0 && !real_connect)
        return; /* not a TLS run */
    fprintf(stderr, "tlsstat: handshakes=%lu resumed=%lu version=%s cipher=%s alpn=%s no_resume=%d\n", handshakes,
            resumed, last_version, last_cipher, last_alpn, no_resume == 1);
}
