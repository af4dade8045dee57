/* The fan-out scenario's driver for takeover's rows, in C (bench/fanout.py builds and runs it).
 *
 *   fanout_driver --host 127.0.0.1 --port P --path /ws --pub-path /pub --clients 4000
 *                 --concurrency 64 --rates 25,50,100 --warmup 0.5 --duration 3 --drain 10
 *                 --pause 0.5 --timeout 60 --budget 400 --size 100
 *
 * It does what bench/node/fanout.js does for its "ws" members, with the same messages, the
 * same figures and the same JSON lines on stdout ({"event":"open"}, "start"/"end" around
 * each counted window, the "result" last), so bench/fanout.py reads either. Why C: on a
 * machine of two cores the driver reads every delivery on one of them, and the Node
 * driver's cost per delivery (an event-loop callback per read) is as high as the server's
 * own; this one costs one recv(2) per read and a few comparisons per frame, so a server
 * given the other core is what saturates (issue 21's "µs per delivery at saturation").
 *
 * Members speak just enough WebSocket (RFC 6455): a fixed upgrade request (§1.3's example
 * key) checked for its accept value, the server's frames parsed from the socket's reads
 * (§5.2), pings answered with a pong of the same payload (§5.5.2), a close frame noted.
 * The first message a member gets must be "joined:<pid>". The publisher is one more
 * connection, to --pub-path, whose masked text frames (§5.3; a zero key) are its
 * publishes. Each message is --size characters: a phase letter ("p" probe, "w" warm-up,
 * "m" measured), the rate's index (one digit), the send time in µs of this process's
 * monotonic clock (15 digits), padding. Every wait is bounded; after --budget seconds the
 * run ends with an error result whatever happens.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define STAMP_DIGITS 15
#define PER_OCTAVE 32
#define BUCKETS (PER_OCTAVE * 40)
#define READ_SIZE (256 * 1024)
#define MAX_PIDS 64
#define MAX_RATES 9

enum { CONNECTING, UPGRADING, JOINING, OPEN, GONE };

struct conn {
    int fd, state, publisher, probed, closed, pid;
    unsigned char *rest; /* bytes of an incomplete head or frame */
    size_t rest_len;
    unsigned char *out; /* bytes the kernel did not take yet */
    size_t out_len, out_cap;
};

struct histogram { double counts[BUCKETS]; double total, max; };

struct rate_stats {
    int index;
    double window_start, window_end; /* µs */
    long in_window, received, stale;
    struct histogram latency;
};

static struct {
    const char *host, *path, *pub_path;
    int port, clients, concurrency, size, nrates, publishers;
    double rates[MAX_RATES], warmup, duration, drain, pause, timeout, budget;
} P = {"127.0.0.1", "/ws", "/pub", 0, 100, 64, 100, 0, 1, {50}, 0.5, 3, 5, 0.5, 60, 300};

static int epfd;
#define MAX_PUBLISHERS 64
static struct conn *members, publishers[MAX_PUBLISHERS];
static int next_publisher;
static int started, opening, joined, failed, probing, probed;
static long wrong;
static char failures[5][160];
static int nfailures;
static char pids[MAX_PIDS][24];
static int pid_counts[MAX_PIDS], npids;
static struct rate_stats *current;
static double t0, deadline_budget;
static unsigned char rbuf[READ_SIZE + 2 * 65536];
static struct rusage usage0;

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (u.ru_utime.tv_sec - usage0.ru_utime.tv_sec) + (u.ru_stime.tv_sec - usage0.ru_stime.tv_sec) +
           ((u.ru_utime.tv_usec - usage0.ru_utime.tv_usec) + (u.ru_stime.tv_usec - usage0.ru_stime.tv_usec)) / 1e6;
}

static void emit(const char *format, ...) {
    va_list args;
    va_start(args, format);
    vprintf(format, args);
    va_end(args);
    putchar('\n');
    fflush(stdout);
}

static void fail(const char *message) {
    emit("{\"event\":\"result\",\"error\":\"%s\",\"client_cpu_seconds\":%.3f}", message, cpu_seconds());
    exit(1);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (q == NULL) fail("out of memory");
    return q;
}

/* -- latency: a log-scale histogram, 32 buckets per doubling (as fanout.js) -------------- */

static void hist_add(struct histogram *h, double us) {
    double value = us < 1 ? 1 : us;
    int index = (int)floor(log2(value) * PER_OCTAVE);
    if (index >= BUCKETS) index = BUCKETS - 1;
    h->counts[index] += 1;
    h->total += 1;
    if (value > h->max) h->max = value;
}

static void print_quantile(struct histogram *h, double q, char *out, size_t n) {
    if (h->total == 0) { snprintf(out, n, "null"); return; }
    double rank = q * h->total, seen = 0;
    for (int i = 0; i < BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) { snprintf(out, n, "%.4f", pow(2, (i + 0.5) / PER_OCTAVE) / 1000); return; }
    }
    snprintf(out, n, "%.4f", h->max / 1000);
}

/* -- one delivery --------------------------------------------------------------------------- */

static void record(struct conn *c, const unsigned char *p, size_t size, double at) {
    if ((int)size != P.size) { wrong++; return; }
    if (p[0] == 'p') {
        if (probing && !c->probed) { c->probed = 1; probed++; }
        return;
    }
    struct rate_stats *stats = current;
    if (stats == NULL) return;
    if (p[1] - '0' != stats->index) { stats->stale++; return; }
    if (at >= stats->window_start && at < stats->window_end) stats->in_window++;
    if (p[0] == 'm') {
        double stamp = 0;
        for (int i = 2; i < 2 + STAMP_DIGITS; i++) stamp = stamp * 10 + (p[i] - '0');
        stats->received++;
        hist_add(&stats->latency, at - stamp);
    }
}

/* -- connections ------------------------------------------------------------------------------ */

static void watch(struct conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, op, c->fd, &ev);
}

static void drop(struct conn *c) {
    if (c->state == GONE) return;
    if (!c->publisher && c->state != OPEN) { opening--; failed++; }
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = GONE;
    c->closed = 1;
}

static void note_failure(struct conn *c, const char *why) {
    if (nfailures < 5) snprintf(failures[nfailures++], sizeof failures[0], "%s", why);
    drop(c);
}

static void flush_out(struct conn *c) {
    while (c->out_len) {
        ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN) drop(c);
            return;
        }
        memmove(c->out, c->out + n, c->out_len - n);
        c->out_len -= n;
    }
    watch(c, EPOLLIN, EPOLL_CTL_MOD);
}

static void send_bytes(struct conn *c, const void *data, size_t n) {
    if (c->state == GONE) return;
    if (c->out_len == 0) {
        ssize_t sent = send(c->fd, data, n, MSG_NOSIGNAL);
        if (sent < 0 && errno != EAGAIN) { drop(c); return; }
        if (sent == (ssize_t)n) return;
        if (sent > 0) { data = (const char *)data + sent; n -= sent; }
        watch(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
    }
    if (c->out_len + n > c->out_cap) {
        c->out_cap = (c->out_len + n) * 2;
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, data, n);
    c->out_len += n;
}

static void connect_to(struct conn *c, int publisher) {
    memset(c, 0, sizeof *c);
    c->publisher = publisher;
    c->pid = -1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) fail("socket() failed (too few file descriptors?)");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(P.port)};
    inet_pton(AF_INET, P.host, &addr.sin_addr);
    c->state = CONNECTING;
    if (!publisher) opening++;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        note_failure(c, strerror(errno)); /* drop() counts it failed */
        return;
    }
    watch(c, EPOLLOUT | EPOLLIN, EPOLL_CTL_ADD);
}

static void connected(struct conn *c) {
    int error = 0;
    socklen_t len = sizeof error;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
    if (error) { note_failure(c, strerror(error)); return; }
    char request[512];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     c->publisher ? P.pub_path : P.path, P.host, P.port);
    c->state = UPGRADING;
    watch(c, EPOLLIN, EPOLL_CTL_MOD);
    send_bytes(c, request, n);
}

static int intern_pid(const unsigned char *p, size_t n) {
    if (n >= sizeof pids[0]) n = sizeof pids[0] - 1;
    for (int i = 0; i < npids; i++)
        if (strlen(pids[i]) == n && memcmp(pids[i], p, n) == 0) return i;
    if (npids == MAX_PIDS) return -1;
    memcpy(pids[npids], p, n);
    pids[npids][n] = 0;
    return npids++;
}

/* The frames in buf[0:len) (§5.2); returns how many bytes were used. */
static size_t frames(struct conn *c, unsigned char *buf, size_t len, double at) {
    size_t start = 0;
    while (len - start >= 2) {
        uint64_t size = buf[start + 1] & 0x7f;
        size_t header = 2;
        if (size == 126) {
            if (len - start < 4) break;
            size = (buf[start + 2] << 8) | buf[start + 3];
            header = 4;
        } else if (size == 127) {
            if (len - start < 10) break;
            size = 0;
            for (int i = 0; i < 8; i++) size = (size << 8) | buf[start + 2 + i];
            header = 10;
        }
        if (len - start < header + size) break;
        int opcode = buf[start] & 0x0f;
        unsigned char *payload = buf + start + header;
        if (opcode == 1 || opcode == 2) {
            if (c->state == JOINING) {
                if (size < 7 || memcmp(payload, "joined:", 7) != 0) {
                    note_failure(c, "unexpected first message");
                    return len;
                }
                c->pid = intern_pid(payload + 7, size - 7);
                c->state = OPEN;
                opening--;
                joined++;
            } else {
                record(c, payload, size, at);
            }
        } else if (opcode == 9 && size <= 125) { /* a pong with the ping's payload, zero mask */
            unsigned char pong[6 + 125] = {0x8a, (unsigned char)(0x80 | size), 0, 0, 0, 0};
            memcpy(pong + 6, payload, size);
            send_bytes(c, pong, 6 + size);
        } else if (opcode == 8) {
            c->closed = 1;
        }
        start += header + size;
    }
    return start;
}

static void readable(struct conn *c) {
    double at = now_us();
    size_t have = c->rest_len;
    if (have > sizeof rbuf - READ_SIZE) { note_failure(c, "a frame or head too large"); return; }
    if (have) memcpy(rbuf, c->rest, have); /* a partial frame: small, at most one message */
    ssize_t n = recv(c->fd, rbuf + have, READ_SIZE, 0);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN) return;
        if (c->state == UPGRADING || c->state == JOINING) note_failure(c, "closed before the join answer");
        else drop(c);
        return;
    }
    size_t len = have + n, start = 0;
    if (c->state == UPGRADING) {
        unsigned char *end = memmem(rbuf, len, "\r\n\r\n", 4);
        if (end == NULL) start = 0;
        else {
            if (len < 12 || memcmp(rbuf, "HTTP/1.1 101", 12) != 0 || !memmem(rbuf, end - rbuf, ACCEPT, 28)) {
                note_failure(c, "bad handshake response");
                return;
            }
            start = end - rbuf + 4;
            c->state = c->publisher ? OPEN : JOINING;
        }
    }
    if (c->state != UPGRADING) start += frames(c, rbuf + start, len - start, at);
    if (c->state == GONE) return;
    c->rest_len = len - start;
    if (c->rest_len) {
        c->rest = xrealloc(c->rest, c->rest_len);
        memcpy(c->rest, rbuf + start, c->rest_len);
    }
}

/* Handle what is ready, waiting at most `timeout_ms`. */
static void pump(int timeout_ms) {
    static struct epoll_event events[1024];
    if (now_us() > deadline_budget) {
        char why[96];
        snprintf(why, sizeof why, "fan-out driver gave up after %g s", P.budget);
        fail(why);
    }
    int n = epoll_wait(epfd, events, 1024, timeout_ms);
    for (int i = 0; i < n; i++) {
        struct conn *c = events[i].data.ptr;
        if (c->state == GONE) continue;
        if (c->state == CONNECTING) {
            if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) connected(c);
            continue;
        }
        if (events[i].events & EPOLLOUT) flush_out(c);
        if (c->state != GONE && events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) readable(c);
    }
}

static void pump_until(double until) {
    double left = until - now_us();
    pump(left > 0 ? (int)ceil(left / 1000) : 0);
}

/* -- the publisher ----------------------------------------------------------------------------- */

static void publish(char phase, int index) {
    unsigned char frame[14 + 65536];
    int size = P.size, header = 2;
    frame[0] = 0x81;
    if (size < 126) frame[1] = 0x80 | size;
    else { frame[1] = 0x80 | 126; frame[2] = size >> 8; frame[3] = size & 0xff; header = 4; }
    memset(frame + header, 0, 4); /* the masking key: zero, so the payload reads as is */
    char *text = (char *)frame + header + 4;
    int head = snprintf(text, 32, "%c%d%0*.0f", phase, index, STAMP_DIGITS, floor(now_us()));
    memset(text + head, 'x', size - head);
    send_bytes(&publishers[next_publisher], frame, header + 4 + size);
    next_publisher = (next_publisher + 1) % P.publishers;
}

/* -- the run ----------------------------------------------------------------------------------- */

static double arg_number(const char *name, const char *value) {
    char *end;
    double v = strtod(value, &end);
    if (*end) { fprintf(stderr, "fanout_driver: %s needs a number, not %s\n", name, value); exit(2); }
    return v;
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--host")) P.host = v;
        else if (!strcmp(k, "--port")) P.port = (int)arg_number(k, v);
        else if (!strcmp(k, "--path")) P.path = v;
        else if (!strcmp(k, "--pub-path")) P.pub_path = v;
        else if (!strcmp(k, "--clients")) P.clients = (int)arg_number(k, v);
        else if (!strcmp(k, "--concurrency")) P.concurrency = (int)arg_number(k, v);
        else if (!strcmp(k, "--size")) P.size = (int)arg_number(k, v);
        else if (!strcmp(k, "--publishers")) P.publishers = (int)arg_number(k, v);
        else if (!strcmp(k, "--warmup")) P.warmup = arg_number(k, v);
        else if (!strcmp(k, "--duration")) P.duration = arg_number(k, v);
        else if (!strcmp(k, "--drain")) P.drain = arg_number(k, v);
        else if (!strcmp(k, "--pause")) P.pause = arg_number(k, v);
        else if (!strcmp(k, "--timeout")) P.timeout = arg_number(k, v);
        else if (!strcmp(k, "--budget")) P.budget = arg_number(k, v);
        else if (!strcmp(k, "--rates")) {
            char *copy = strdup(v), *save = NULL;
            P.nrates = 0;
            for (char *t = strtok_r(copy, ",", &save); t && P.nrates < MAX_RATES; t = strtok_r(NULL, ",", &save))
                P.rates[P.nrates++] = arg_number(k, t);
        } else { fprintf(stderr, "fanout_driver: unknown option %s\n", k); exit(2); }
    }
    if (P.port <= 0 || P.clients <= 0 || P.size < 2 + STAMP_DIGITS || P.size > 65535 || P.publishers < 1 ||
        P.publishers > MAX_PUBLISHERS) {
        fprintf(stderr, "fanout_driver: needs --port, --clients > 0, 17 <= --size <= 65535, 1 <= --publishers <= 64\n");
        exit(2);
    }
}

static void print_pids(char *out, size_t n) {
    size_t used = snprintf(out, n, "{");
    for (int i = 0; i < npids && used < n; i++)
        used += snprintf(out + used, n - used, "%s\"%s\":%d", i ? "," : "", pids[i], pid_counts[i]);
    if (used < n) snprintf(out + used, n - used, "}");
}

static void wait_seconds(double seconds) {
    double until = now_us() + seconds * 1e6;
    while (now_us() < until) pump_until(until);
}

/* Close every connection (our close frame and FIN, §5.5.1); whether all ended within 10 s. */
static int close_all(void) {
    static const unsigned char close_frame[] = {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8};
    for (int i = -P.publishers; i < P.clients; i++) {
        struct conn *c = i < 0 ? &publishers[-i - 1] : &members[i];
        if (c->state == GONE) continue;
        if (c->closed) { drop(c); continue; }
        send_bytes(c, close_frame, sizeof close_frame);
        if (c->state != GONE && c->out_len == 0) shutdown(c->fd, SHUT_WR);
    }
    double until = now_us() + 10e6;
    for (;;) {
        int left = 0;
        for (int i = 0; i < P.publishers; i++) left += publishers[i].state != GONE;
        for (int i = 0; i < P.clients; i++) left += members[i].state != GONE;
        if (!left) return 1;
        if (now_us() >= until) return 0;
        pump_until(until);
    }
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    getrusage(RUSAGE_SELF, &usage0);
    t0 = now_us();
    deadline_budget = t0 + P.budget * 1e6;
    epfd = epoll_create1(0);
    members = calloc(P.clients, sizeof *members);
    if (members == NULL) fail("out of memory");

    /* Members, `concurrency` at a time, until every one has joined or failed. */
    double open_deadline = now_us() + P.timeout * 1e6;
    while (joined + failed < P.clients && now_us() < open_deadline) {
        while (started < P.clients && opening < P.concurrency) connect_to(&members[started++], 0);
        pump(10);
    }
    double open_seconds = (now_us() - t0) / 1e6;
    if (joined < P.clients) {
        char why[400];
        snprintf(why, sizeof why, "opened %d of %d members (first failure: %s)", joined, P.clients,
                 nfailures ? failures[0] : "none: timed out");
        fail(why);
    }
    for (int i = 0; i < P.clients; i++)
        if (members[i].pid >= 0) pid_counts[members[i].pid]++;
    char per_pid[MAX_PIDS * 40];
    print_pids(per_pid, sizeof per_pid);

    /* The publishers: each publish goes to the next, in turn (several: publishes from as many
       connections, on whichever workers those landed, as a room's many talkers make). */
    double publisher_deadline = now_us() + P.timeout * 1e6;
    for (int i = 0; i < P.publishers; i++) connect_to(&publishers[i], 1);
    for (int i = 0; i < P.publishers; i++) {
        while (publishers[i].state != OPEN && publishers[i].state != GONE && now_us() < publisher_deadline)
            pump(10);
        if (publishers[i].state != OPEN) fail("a publisher did not connect");
    }
    emit("{\"event\":\"open\",\"members\":%d,\"per_pid\":%s,\"open_seconds\":%.3f}", joined, per_pid, open_seconds);

    /* Probes every 100 ms until every member got one (every worker has subscribed). */
    probing = 1;
    double probe_deadline = now_us() + P.timeout * 1e6;
    while (probed < joined && now_us() < probe_deadline) {
        publish('p', 0);
        double next = now_us() + 100e3;
        while (probed < joined && now_us() < next) pump_until(next);
    }
    probing = 0;
    if (probed < joined) {
        char why[160];
        snprintf(why, sizeof why, "only %d of %d members received a probe within %g s", probed, joined, P.timeout);
        fail(why);
    }
    wait_seconds(P.pause);

    char rows[MAX_RATES][640];
    for (int r = 0; r < P.nrates; r++) {
        double rate = P.rates[r];
        struct rate_stats *stats = calloc(1, sizeof *stats);
        stats->index = r;
        current = stats;
        /* The k-th publish is due at start + k / rate; a late tick sends the backlog at once. */
        double start = now_us(), warm_end = start + P.warmup * 1e6, end = warm_end + P.duration * 1e6;
        stats->window_start = warm_end;
        stats->window_end = end;
        long sent = 0, measured = 0;
        double max_lag = 0;
        int counting = 0;
        for (;;) {
            double now = now_us();
            if (!counting && now >= warm_end) { counting = 1; emit("{\"event\":\"start\",\"rate\":%g}", rate); }
            for (;;) {
                double due = start + sent * 1e6 / rate;
                if (due > now || due >= end) break;
                char phase = due >= warm_end ? 'm' : 'w';
                if (phase == 'm') { measured++; if (now - due > max_lag) max_lag = now - due; }
                publish(phase, r);
                sent++;
            }
            if (now >= end) { emit("{\"event\":\"end\",\"rate\":%g}", rate); break; }
            double due = start + sent * 1e6 / rate;
            pump_until(due < end ? due : end);
        }
        long expected = measured * (long)joined;
        double drain_start = now_us(), drain_end = drain_start + P.drain * 1e6;
        while (stats->received < expected && now_us() < drain_end) pump_until(drain_end);
        int closed = 0;
        for (int i = 0; i < P.clients; i++) closed += members[i].closed;
        char p50[32], p99[32];
        print_quantile(&stats->latency, 0.5, p50, sizeof p50);
        print_quantile(&stats->latency, 0.99, p99, sizeof p99);
        snprintf(rows[r], sizeof rows[r],
                 "{\"rate\":%g,\"published\":%ld,\"publish_rate\":%.3f,\"max_publish_lag_ms\":%.3f,"
                 "\"deliveries\":%ld,\"deliveries_per_second\":%.1f,\"expected\":%ld,\"received\":%ld,"
                 "\"lost\":%ld,\"drain_seconds\":%.3f,\"p50_ms\":%s,\"p99_ms\":%s,\"max_ms\":%.3f,"
                 "\"stale\":%ld,\"closed_members\":%d}",
                 rate, measured, measured / P.duration, max_lag / 1000, stats->in_window,
                 stats->in_window / P.duration, expected, stats->received, expected - stats->received,
                 (now_us() - drain_start) / 1e6, p50, p99, stats->latency.max / 1000, stats->stale, closed);
        current = NULL;
        free(stats);
        wait_seconds(P.pause);
    }
    int clean = close_all();
    printf("{\"event\":\"result\",\"client\":\"ws\",\"driver\":\"c\",\"members\":%d,\"per_pid\":%s,"
           "\"open_seconds\":%.3f,\"duration\":%g,\"rates\":[",
           joined, per_pid, open_seconds, P.duration);
    for (int r = 0; r < P.nrates; r++) printf("%s%s", r ? "," : "", rows[r]);
    printf("],\"wrong_messages\":%ld,\"clean_close\":%s,\"client_cpu_seconds\":%.3f}\n", wrong,
           clean ? "true" : "false", cpu_seconds());
    fflush(stdout);
    return 0;
}
