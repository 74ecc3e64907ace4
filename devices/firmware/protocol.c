/* The physnn serial protocol, version 1, for small boards: frames in, replies out.
 * Plain C99, no hardware: see physnn_fw.h for what a board supplies. devices/PROTOCOL.md is
 * the specification; physnn/hardware/protocol.py is the host's implementation of the same bytes.
 */
#include <stddef.h>
#include <string.h>

#include "physnn_fw.h"

enum { T_HELLO = 0x01, T_OPEN = 0x02, T_LOAD = 0x03, T_RUN = 0x04, T_FETCH = 0x05,
       T_ERROR = 0x7F, T_REPLY = 0x80 };
enum { E_CRC = 1, E_VERSION = 2, E_TYPE = 3, E_PAYLOAD = 4, E_CHANNEL = 5, E_NOT_OPEN = 6,
       E_TOO_LARGE = 8, E_SEQUENCE = 9, E_DATA_CRC = 10, E_NO_RESULT = 11,
       E_FORMAT = 13 };
#define CAP_PERSISTENT 8
#define PERSIST_MAGIC 0x70687973UL /* "phys" */
#define FRAME_MAX (FW_MAX_PAYLOAD + FW_OVERHEAD)

/* ---- checksums ------------------------------------------------------------------------ */
uint16_t fw_crc16(const uint8_t *p, uint16_t n) { /* CRC-16/CCITT-FALSE */
    uint16_t crc = 0xFFFF;
    while (n--) {
        crc ^= (uint16_t)(*p++) << 8;
        for (uint8_t i = 0; i < 8; i++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

uint32_t fw_crc32(const uint8_t *p, uint16_t n, uint32_t crc) { /* CRC-32 (zlib), chainable */
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (uint8_t i = 0; i < 8; i++)
            crc = (crc & 1) ? (crc >> 1) ^ 0xEDB88320UL : crc >> 1;
    }
    return ~crc;
}

/* ---- little-endian access --------------------------------------------------------------- */
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }
static uint32_t get32(const uint8_t *p) { return get16(p) | ((uint32_t)get16(p + 2) << 16); }
static uint64_t get64(const uint8_t *p) { return get32(p) | ((uint64_t)get32(p + 4) << 32); }

/* ---- state ------------------------------------------------------------------------------ */
static uint8_t rx[FRAME_MAX]; /* the frame being received */
static uint16_t rx_len;
static uint8_t rx_header_ok; /* rx[0..11] is a header whose CRC-16 already checked out */
static uint8_t tx[FRAME_MAX]; /* the last reply: sent again for a repeated request */
static uint16_t tx_len, tx_at;
static uint32_t last_request_crc; /* the CRC-32 of the request tx answers */
static uint8_t have_reply, chan_open;
static uint32_t boot_id;

static struct {
    uint32_t batch_id;
    uint16_t n;
    uint16_t filled; /* elements loaded from 0 */
} upload;
static float in[FW_MAX_BATCH * FW_N_IN];

static fw_persist_t *st; /* survives a reset */

static uint32_t persist_check(void) {
    return fw_crc32((const uint8_t *)st, (uint16_t)offsetof(fw_persist_t, check), 0);
}

static void persist_seal(void) { st->check = persist_check(); }

void fw_init(void) {
    rx_len = 0;
    rx_header_ok = 0;
    have_reply = chan_open = 0;
    upload.batch_id = 0;
    boot_id = hw_boot_id();
    st = hw_persist();
    if (st->magic != PERSIST_MAGIC || st->check != persist_check()) { /* power-on garbage */
        memset(st, 0, sizeof *st);
        st->magic = PERSIST_MAGIC;
        persist_seal();
    }
}

/* ---- building a reply in tx ----------------------------------------------------------- */
static void put8(uint8_t v) { tx[tx_at++] = v; }
static void put16(uint16_t v) { put8((uint8_t)v); put8((uint8_t)(v >> 8)); }
static void put32(uint32_t v) { put16((uint16_t)v); put16((uint16_t)(v >> 16)); }
static void put64(uint64_t v) { put32((uint32_t)v); put32((uint32_t)(v >> 32)); }
static void put_str(const char *s) {
    uint8_t n = (uint8_t)strlen(s);
    put8(n);
    memcpy(tx + tx_at, s, n);
    tx_at += n;
}
static void put_f64(float v) { /* a float as an IEEE 754 double, without needing doubles */
    union { float f; uint32_t u; } c;
    c.f = v;
    uint32_t sign = c.u & 0x80000000UL, e = (c.u >> 23) & 0xFF, m = c.u & 0x7FFFFFUL, hi;
    if (e == 0) hi = sign; /* zero (subnormals flush to zero) */
    else if (e == 0xFF) hi = sign | 0x7FF00000UL | (m >> 3);
    else hi = sign | ((e - 127 + 1023) << 20) | (m >> 3);
    put32(e == 0 ? 0 : m << 29);
    put32(hi);
}

static void begin(uint8_t type, uint8_t chan, uint16_t seq) {
    tx_at = 0;
    put8(0xA5); put8(0x5A); put8(FW_VERSION); put8(type); put8(chan); put8(0);
    put16(seq);
    tx_at = 12; /* length and header CRC are filled in by finish() */
}

static void finish(void) {
    uint16_t n = (uint16_t)(tx_at - 12);
    tx[8] = (uint8_t)n;
    tx[9] = (uint8_t)(n >> 8);
    uint16_t h = fw_crc16(tx, 10);
    tx[10] = (uint8_t)h;
    tx[11] = (uint8_t)(h >> 8);
    uint32_t c = fw_crc32(tx, tx_at, 0);
    tx_at = 12 + n;
    put32(c);
    tx_len = tx_at;
}

static void error(uint8_t chan, uint16_t seq, uint8_t code, const char *message) {
    begin(T_ERROR | T_REPLY, chan, seq);
    put8(code);
    put_str(message);
    finish();
}

/* ---- requests ----------------------------------------------------------------------------- */
static void on_hello(uint8_t chan, uint16_t seq) {
    begin(T_HELLO | T_REPLY, chan, seq);
    put8(FW_VERSION);
    put8(1);              /* one channel: 0 */
    put8(1);              /* float32 samples */
    put8(CAP_PERSISTENT); /* the last batch and the counters survive a reset */
    put16(FW_MAX_PAYLOAD);
    put32(FW_MAX_BATCH);
    put32(boot_id);
    put_str(FW_IDENTITY);
    finish();
}

static void on_open(uint8_t chan, uint16_t seq, const uint8_t *p, uint16_t n) {
    if (chan != 0) return error(chan, seq, E_CHANNEL, "this board has channel 0 only");
    if (n < 21 || n != 21 + get16(p + 19)) return error(chan, seq, E_PAYLOAD, "bad OPEN");
    /* n_in and seed (p[0..10]) are ignored: this board is what it is; it reports its spec and
     * the host refuses it when the n_in it needs differs */
    uint64_t token = get64(p + 11);
    if (st->token != token) { /* another host device: its own counters */
        memset(st, 0, sizeof *st);
        st->magic = PERSIST_MAGIC;
        st->token = token;
        persist_seal();
    }
    chan_open = 1;
    upload.batch_id = 0;
    begin(T_OPEN | T_REPLY, chan, seq);
    put16(FW_N_IN);
    put16(FW_N_OUT);
    put8(0); /* a continuous range, no levels */
    put_f64(FW_DOMAIN_LO);
    put_f64(FW_DOMAIN_HI);
    put_f64(FW_TIME_PER_QUERY_S);
    put_f64(FW_ENERGY_PER_QUERY_J);
    put64(st->measured);
    put_str(FW_NAME);
    put_str(FW_UNITS);
    finish();
}

static uint8_t batch_ok(uint8_t chan, uint16_t seq, uint8_t fmt, uint32_t n) {
    if (!chan_open) { error(chan, seq, E_NOT_OPEN, "channel not open (reset?)"); return 0; }
    if (fmt != 0) { error(chan, seq, E_FORMAT, "float32 only"); return 0; }
    if (n < 1 || n > FW_MAX_BATCH) { error(chan, seq, E_TOO_LARGE, "batch too large"); return 0; }
    return 1;
}

static void on_load(uint8_t chan, uint16_t seq, const uint8_t *p, uint16_t n) {
    if (n < 13 || (n - 13) % 4) return error(chan, seq, E_PAYLOAD, "bad LOAD");
    uint32_t id = get32(p), count = (uint32_t)(n - 13) / 4, ns = get32(p + 5), off = get32(p + 9);
    if (!batch_ok(chan, seq, p[4], ns)) return;
    if (upload.batch_id != id || upload.n != ns) {
        if (off != 0) return error(chan, seq, E_SEQUENCE, "a batch starts at offset 0");
        upload.batch_id = id;
        upload.n = (uint16_t)ns;
        upload.filled = 0;
    }
    if (off > upload.filled) return error(chan, seq, E_SEQUENCE, "gap in LOAD");
    if (off + count > ns * FW_N_IN) return error(chan, seq, E_PAYLOAD, "LOAD past the end");
    memcpy(in + off, p + 13, count * 4); /* IEEE 754 little-endian on both ends */
    if (off + count > upload.filled) upload.filled = (uint16_t)(off + count);
    begin(T_LOAD | T_REPLY, chan, seq);
    put32(id);
    put32(upload.filled);
    finish();
}

static void on_run(uint8_t chan, uint16_t seq, const uint8_t *p, uint16_t n) {
    if (n != 13) return error(chan, seq, E_PAYLOAD, "bad RUN");
    uint32_t id = get32(p), ns = get32(p + 5), in_crc = get32(p + 9);
    if (!batch_ok(chan, seq, p[4], ns)) return;
    if (!(st->batch_id == id && st->input_crc == in_crc && st->n == ns)) { /* not run yet */
        if (upload.batch_id != id || upload.n != ns || upload.filled != ns * FW_N_IN)
            return error(chan, seq, E_SEQUENCE, "batch not loaded");
        if (fw_crc32((const uint8_t *)in, (uint16_t)(ns * FW_N_IN * 4), 0) != in_crc)
            return error(chan, seq, E_DATA_CRC, "inputs do not match the CRC");
        /* Measure into scratch RAM: the sealed record of the previous batch stays valid for
           the whole measurement, so a reset meanwhile loses nothing (the host runs the batch
           again and it is counted once). Only the short copy-and-seal below is exposed. */
        static float scratch[FW_MAX_BATCH * FW_N_OUT];
        for (uint16_t s = 0; s < ns; s++) hw_measure(in + s * FW_N_IN, scratch + s * FW_N_OUT);
        memcpy(st->out, scratch, ns * FW_N_OUT * 4);
        st->batch_id = id;
        st->input_crc = in_crc;
        st->n = (uint16_t)ns;
        st->output_crc = fw_crc32((const uint8_t *)st->out, (uint16_t)(ns * FW_N_OUT * 4), 0);
        st->measured += ns;
        persist_seal();
    }
    begin(T_RUN | T_REPLY, chan, seq);
    put32(id);
    put32(st->output_crc);
    put64(st->measured);
    finish();
}

static void on_fetch(uint8_t chan, uint16_t seq, const uint8_t *p, uint16_t n) {
    if (n != 12) return error(chan, seq, E_PAYLOAD, "bad FETCH");
    if (!chan_open) return error(chan, seq, E_NOT_OPEN, "channel not open (reset?)");
    uint32_t id = get32(p), off = get32(p + 4), count = get32(p + 8);
    if (st->batch_id != id || id == 0) return error(chan, seq, E_NO_RESULT, "batch has not run");
    if (off + count > (uint32_t)st->n * FW_N_OUT || count * 4 + 8 > FW_MAX_PAYLOAD)
        return error(chan, seq, E_PAYLOAD, "FETCH out of range");
    begin(T_FETCH | T_REPLY, chan, seq);
    put32(id);
    put32(off);
    memcpy(tx + tx_at, st->out + off, count * 4);
    tx_at = (uint16_t)(tx_at + count * 4);
    finish();
}

static void on_frame(uint16_t n) {
    const uint8_t type = rx[3], chan = rx[4], *p = rx + 12;
    const uint16_t seq = get16(rx + 6);
    const uint32_t request_crc = get32(rx + 12 + n);
    if (type & T_REPLY) return; /* not for us */
    if (have_reply && request_crc == last_request_crc) { /* a retry: the same answer again */
        hw_send(tx, tx_len);
        return;
    }
    if (rx[2] != FW_VERSION) error(chan, seq, E_VERSION, "protocol version 1 only");
    else if (type == T_HELLO) on_hello(chan, seq);
    else if (type == T_OPEN) on_open(chan, seq, p, n);
    else if (type == T_LOAD) on_load(chan, seq, p, n);
    else if (type == T_RUN) on_run(chan, seq, p, n);
    else if (type == T_FETCH) on_fetch(chan, seq, p, n);
    else error(chan, seq, E_TYPE, "unknown request");
    have_reply = 1;
    last_request_crc = request_crc;
    hw_send(tx, tx_len);
}

static void nak(uint8_t type, uint8_t chan, uint16_t seq) { /* outside tx: keep the last reply */
    uint8_t f[FW_OVERHEAD + 2];
    if (type & T_REPLY) return;
    f[0] = 0xA5; f[1] = 0x5A; f[2] = FW_VERSION; f[3] = T_ERROR | T_REPLY; f[4] = chan;
    f[5] = 0; f[6] = (uint8_t)seq; f[7] = (uint8_t)(seq >> 8); f[8] = 2; f[9] = 0;
    uint16_t h = fw_crc16(f, 10);
    f[10] = (uint8_t)h; f[11] = (uint8_t)(h >> 8);
    f[12] = E_CRC; f[13] = 0; /* code, empty message */
    uint32_t c = fw_crc32(f, 14, 0);
    for (uint8_t i = 0; i < 4; i++) f[14 + i] = (uint8_t)(c >> (8 * i));
    hw_send(f, sizeof f);
}

/* ---- receiving: hunt for the sync, trust a length only after the header CRC ------------ */
static void drop(uint16_t k) {
    rx_header_ok = 0; /* the bytes moved: rx[0..11] is another candidate header */
    memmove(rx, rx + k, rx_len - k);
    rx_len = (uint16_t)(rx_len - k);
}

void fw_rx_byte(uint8_t b) {
    if (rx_len == 0 && b != 0xA5) return; /* the common case of garbage: no work */
    rx[rx_len++] = b;
    for (;;) {
        uint16_t i = 0;
        while (i < rx_len && !(rx[i] == 0xA5 && (i + 1 == rx_len || rx[i + 1] == 0x5A))) i++;
        if (i) drop(i);
        if (rx_len < 12) return;
        uint16_t n = get16(rx + 8);
        if (!rx_header_ok) { /* once per candidate header, not once per payload byte */
            if (fw_crc16(rx, 10) != get16(rx + 10) || n > FW_MAX_PAYLOAD) { drop(1); continue; }
            rx_header_ok = 1;
        }
        if (rx_len < FW_OVERHEAD + n) return;
        if (fw_crc32(rx, (uint16_t)(12 + n), 0) != get32(rx + 12 + n)) {
            nak(rx[3], rx[4], get16(rx + 6));
            drop(1);
            continue;
        }
        on_frame(n);
        drop((uint16_t)(FW_OVERHEAD + n));
    }
}
