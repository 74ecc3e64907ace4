/* The reference firmware image (build/firmware.elf) running on a simulated ATmega328P
 * (simavr), its UART0 on a pseudo-terminal: the real serial driver talks to the real AVR
 * code, byte for byte, without a board.
 *
 *   make sim                          build the firmware and this harness
 *   build/simavr-pty build/firmware.elf [-l LINK] [-e FILE] [-f HZ] [-s SPEED] [-r N]
 *
 * -l LINK   also put the pty behind the symlink LINK (as /dev/serial/by-id/... for a USB
 *           board)
 * -e FILE   keep the EEPROM in FILE (read at start if it exists, written at exit), so it
 *           survives a restart of the simulation as a real EEPROM survives a power cycle
 *           (the firmware's boot counter, hence its boot id, goes on counting)
 * -r N      pull RESET (as SIGUSR1 below) right after the N-th ADC conversion starts,
 *           counted from 1 since the start: a reset at a known point of a measurement
 * -f HZ     the MCU clock (default 16000000, as F_CPU in the Makefile)
 * -s SPEED  simulated seconds per wall-clock second: 1 (default) paces the MCU to real time,
 *           so the UART runs at its real baud rate, where the host is fast enough; 0 runs as
 *           fast as the host CPU allows. simavr runs this firmware at roughly 5-13 MHz on a
 *           loaded 2-core machine (its three PWM timers cost most), below the chip's 16 MHz:
 *           there the board simply runs late, as fast as it can, whatever -s says
 *
 * "pty PATH" on stdout says the board is ready: the firmware has booted and switched its UART
 * receiver on. Bytes sent before that are lost, as on a real board that is still booting
 * (the boot counter's EEPROM write takes the first ~14 ms).
 *
 * Signals: SIGUSR1 pulls the RESET pin (SRAM survives, as on a real board, so the .noinit
 * batch record and counters of the firmware survive); SIGUSR2 is a power cycle (SRAM
 * cleared); SIGHUP prints "stats sim_s=... wall_s=... bytes_in=... bytes_out=..." on stdout
 * (simulated and wall-clock seconds so far: benchmarks/firmware_simavr.py reads it);
 * SIGTERM/SIGINT stop the simulation and print its statistics on stderr.
 *
 * The board's "physics": each PWM output drives the ADC input of the same number through an
 * ideal RC filter, so ADCi reads the duty cycle of PWM i: duty * 5000 / 255 mV (integer
 * mV), converted by simavr's ADC against AVcc = 5000 mV as mV * 1023 / 5000.
 *
 * simavr's UART keeps the AVR's timing in simulated cycles, not in wall-clock time: a
 * received byte raises RXC (UBRR+1)*16 (or *8 with U2X) cycles per bit times 11 bits after
 * the previous one (simavr counts a parity bit even for 8N1, so the line is 10 % slower than
 * a real 8N1 one), and UDRE comes back as many cycles after each UDR write (measured: 1505
 * cycles a byte at 115200 baud, 185 at 1 Mbaud, each with the firmware's 9-cycle poll loop).
 * Bytes written to UDR appear on UART_IRQ_OUTPUT at once. Wall-clock baud rates on the pty
 * follow from how fast the simulation runs (-s above). See sync_baud() for a simavr 1.6 bug
 * this harness works around.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <avr_adc.h>
#include <avr_eeprom.h>
#include <avr_uart.h>
#include <sim_avr.h>
#include <sim_elf.h>
#include <sim_irq.h>

/* ATmega328P data-space addresses (datasheet, register summary) */
enum { OCR0A = 0x47, OCR0B = 0x48, OCR1AL = 0x88, OCR1BL = 0x8A, OCR2A = 0xB3, OCR2B = 0xB4,
       UCSR0A = 0xC0, UCSR0B = 0xC1, RXEN0 = 4, UBRR0L = 0xC4, UBRR0H = 0xC5,
       SRAM_START = 0x100 };
static const uint16_t pwm_reg[6] = {OCR0A, OCR0B, OCR1AL, OCR1BL, OCR2A, OCR2B};
#define AVCC_MV 5000u
#define CHUNK 2000 /* instructions between looks at the pty */
#define OUT_MAX (1 << 20)

static avr_t *avr;
static int master = -1;
static char pty_name[256];
static uint8_t in_buf[4096];
static size_t in_len, in_at;
static uint8_t out_buf[OUT_MAX];
static size_t out_len;
static int xoff; /* simavr's 64-byte receive FIFO is full */
static unsigned long long bytes_in, bytes_out, resets;
static volatile sig_atomic_t want_reset, want_power_cycle, want_stop, want_stats;
static int uart_reported;
static unsigned long adc_conversions, reset_at_conversion;
static double t_start;

static void on_signal(int sig) {
    if (sig == SIGUSR1) want_reset = 1;
    else if (sig == SIGUSR2) want_power_cycle = 1;
    else if (sig == SIGHUP) want_stats = 1;
    else want_stop = 1;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- the UART: bytes out of the MCU go to the pty, bytes from the pty into its FIFO ---- */
static void uart_out(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)param;
    if (!uart_reported) { /* what the firmware set up, for the log and the tests */
        unsigned ubrr = avr->data[UBRR0L] | (unsigned)(avr->data[UBRR0H] & 0x0F) << 8;
        unsigned div = (avr->data[UCSR0A] & 0x02) ? 8u : 16u;
        fprintf(stderr, "uart: UBRR0=%u U2X0=%u -> %.0f baud\n", ubrr, div == 8,
                (double)avr->frequency / (div * (ubrr + 1.0)));
        uart_reported = 1;
    }
    if (out_len < OUT_MAX) out_buf[out_len++] = (uint8_t)value;
    bytes_out++;
}

static void uart_xoff(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)param;
    xoff = value != 0;
}

static avr_irq_t *uart_in; /* looked up once: avr_io_getirq walks every IO module */

static void feed_uart(void) {
    avr_irq_t *in = uart_in;
    while (in_at < in_len && !xoff) {
        avr_raise_irq(in, in_buf[in_at++]);
        bytes_in++;
    }
    if (in_at == in_len) in_at = in_len = 0;
}

static void pump_pty(void) {
    if (in_len == 0) {
        ssize_t n = read(master, in_buf, sizeof in_buf);
        if (n > 0) in_len = (size_t)n;
    }
    feed_uart();
    if (out_len) {
        ssize_t n = write(master, out_buf, out_len);
        if (n > 0) {
            memmove(out_buf, out_buf + n, out_len - (size_t)n);
            out_len -= (size_t)n;
        }
    }
}

/* simavr 1.6 works out the UART's byte time only when UBRR0L is written, so the U2X0 that
 * board_avr.c sets afterwards (as every AVR program does) would be ignored: the line would
 * run at half its speed (115200 baud taking the time of 58824). Whenever UBRR0 or U2X0
 * changed, write UBRR0L again through simavr's own handler, as the firmware would. */
static void sync_baud(void) {
    static unsigned last = ~0u;
    unsigned now = avr->data[UBRR0L] | (unsigned)avr->data[UBRR0H] << 8 |
                   (unsigned)(avr->data[UCSR0A] & 0x02) << 15;
    int io = UBRR0L - 32; /* AVR_DATA_TO_IO */
    if (now == last || !avr->io[io].w.c) return;
    last = now;
    avr->io[io].w.c(avr, UBRR0L, avr->data[UBRR0L], avr->io[io].w.param);
}

/* ---- the physics: PWM i -> RC filter -> ADC i ---------------------------------------- */
static void adc_trigger(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    (void)param;
    union { avr_adc_mux_t mux; uint32_t v; } e = {.v = value};
    if (++adc_conversions == reset_at_conversion) want_reset = 1; /* after this chunk */
    if (e.mux.kind != ADC_MUX_SINGLE || e.mux.src > 7) return;
    uint32_t mv = e.mux.src < 6 ? avr->data[pwm_reg[e.mux.src]] * AVCC_MV / 255u : 0u;
    avr_raise_irq(avr_io_getirq(avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_ADC0 + e.mux.src), mv);
}

/* ---- the pseudo-terminal ---------------------------------------------------------------- */
static int open_pty(const char *link) {
    master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) return perror("posix_openpt"), -1;
    const char *name = ptsname(master);
    int slave = open(name, O_RDWR | O_NOCTTY); /* held open: no EIO while the host is away */
    struct termios t;
    if (slave < 0 || tcgetattr(slave, &t)) return perror(name), -1;
    cfmakeraw(&t); /* no echo, no line editing: bytes pass unchanged */
    tcsetattr(slave, TCSANOW, &t);
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    if (link) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.new", link);
        unlink(tmp);
        if (symlink(name, tmp) || rename(tmp, link)) return perror(link), -1;
    }
    snprintf(pty_name, sizeof pty_name, "%s", name);
    return 0;
}

/* ---- the EEPROM image in a file ------------------------------------------------------------ */
static void eeprom_file(const char *path, int save) {
    avr_eeprom_desc_t d = {.ee = NULL, .offset = 0, .size = avr->e2end + 1};
    avr_ioctl(avr, AVR_IOCTL_EEPROM_GET, &d); /* ee = NULL: points d.ee at the EEPROM itself
                                                (simavr 1.6 returns -1 all the same) */
    if (!path || !d.ee) return;
    FILE *f = fopen(path, save ? "wb" : "rb");
    if (!f) return; /* nothing saved yet: the .elf's EEPROM image stays */
    size_t n = save ? fwrite(d.ee, 1, d.size, f) : fread(d.ee, 1, d.size, f);
    if (n != d.size) fprintf(stderr, "%s: %zu of %u EEPROM bytes\n", path, n, (unsigned)d.size);
    fclose(f);
}

/* ---- the MCU ------------------------------------------------------------------------------ */
static void reset_mcu(int keep_sram) {
    static uint8_t sram[8192];
    size_t n = (size_t)avr->ramend + 1 - SRAM_START;
    if (keep_sram && n <= sizeof sram) memcpy(sram, avr->data + SRAM_START, n);
    avr_reset(avr);
    if (keep_sram && n <= sizeof sram) memcpy(avr->data + SRAM_START, sram, n);
    else memset(avr->data + SRAM_START, 0, n);
    /* the FIFO is empty again; XOFF is a filtered IRQ, so clear its stored level too */
    avr_raise_irq(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF), 0);
    xoff = 0;
    uart_reported = 0;
    resets++;
    fprintf(stderr, "%s at cycle %llu\n", keep_sram ? "reset" : "power cycle",
            (unsigned long long)avr->cycle);
}

static avr_t *make_mcu(const char *elf, uint32_t hz) {
    static elf_firmware_t f;
    if (elf_read_firmware(elf, &f)) return fprintf(stderr, "cannot read %s\n", elf), NULL;
    if (!f.mmcu[0]) snprintf(f.mmcu, sizeof f.mmcu, "atmega328p");
    f.frequency = hz;
    f.vcc = f.avcc = f.aref = AVCC_MV;
    avr_t *a = avr_make_mcu_by_name(f.mmcu);
    if (!a) return fprintf(stderr, "simavr knows no MCU %s\n", f.mmcu), NULL;
    avr_init(a);
    a->log = LOG_ERROR;
    avr_load_firmware(a, &f);
    uint32_t flags = 0; /* no console echo, no usleep() in the UCSR0A polls of hw_send */
    avr_ioctl(a, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    return a;
}

static void hook_io(void) {
    uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT),
                            uart_out, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF),
                            uart_xoff, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_ADC_GETIRQ, ADC_IRQ_OUT_TRIGGER),
                            adc_trigger, NULL);
}

/* Run the MCU; with speed > 0 keep simulated time at most 1 ms ahead of wall time * speed,
 * sleeping in poll() on the pty (a byte from the host wakes it at once). */
static int run(double speed) {
    double t0 = now_s();
    avr_cycle_count_t c0 = avr->cycle;
    struct pollfd p = {.fd = master, .events = POLLIN};
    int announced = 0;
    while (!want_stop) {
        if (want_stats) {
            printf("stats sim_s=%.6f wall_s=%.6f bytes_in=%llu bytes_out=%llu\n",
                   (double)avr->cycle / avr->frequency, now_s() - t_start, bytes_in, bytes_out);
            fflush(stdout);
            want_stats = 0;
        }
        if (want_reset || want_power_cycle) {
            reset_mcu(want_reset != 0);
            want_reset = want_power_cycle = 0;
        }
        for (int i = 0; i < CHUNK; i++) {
            int state = avr_run(avr);
            if (state == cpu_Done || state == cpu_Crashed)
                return fprintf(stderr, "the MCU stopped (state %d)\n", state), 1;
        }
        sync_baud();
        pump_pty();
        if (!announced && (avr->data[UCSR0B] & (1 << RXEN0))) { /* the firmware listens */
            printf("pty %s\n", pty_name);
            fflush(stdout);
            announced = 1;
        }
        if (speed <= 0) continue;
        double sim = (double)(avr->cycle - c0) / avr->frequency / speed, wall = now_s() - t0;
        if (sim - wall > 1e-3 && in_len == 0 && out_len == 0) {
            poll(&p, 1, (int)((sim - wall) * 1e3));
        } else if (wall - sim > 0.05) { /* the host is too slow: do not race to catch up */
            t0 = now_s() - sim;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *link = NULL, *eeprom = NULL;
    uint32_t hz = 16000000;
    double speed = 1.0;
    int opt;
    while ((opt = getopt(argc, argv, "l:e:f:s:r:")) != -1) {
        if (opt == 'l') link = optarg;
        else if (opt == 'e') eeprom = optarg;
        else if (opt == 'f') hz = (uint32_t)strtoul(optarg, NULL, 10);
        else if (opt == 's') speed = strtod(optarg, NULL);
        else if (opt == 'r') reset_at_conversion = strtoul(optarg, NULL, 10);
        else return fprintf(stderr, "usage: %s FIRMWARE.elf [-l LINK] [-e FILE] [-f HZ] "
                            "[-s SPEED] [-r N]\n", argv[0]), 2;
    }
    if (optind != argc - 1) return fprintf(stderr, "usage: %s FIRMWARE.elf ...\n", argv[0]), 2;
    avr = make_mcu(argv[optind], hz);
    if (!avr) return 1;
    hook_io();
    eeprom_file(eeprom, 0);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (open_pty(link)) return 1;
    t_start = now_s();
    int rc = run(speed);
    double wall = now_s() - t_start;
    fprintf(stderr, "simulated %.3f s in %.3f s (%.1f MHz); %llu bytes in, %llu out, "
            "%llu resets\n", (double)avr->cycle / avr->frequency, wall,
            (double)avr->cycle / wall / 1e6, bytes_in, bytes_out, resets);
    eeprom_file(eeprom, 1);
    if (link) unlink(link);
    return rc;
}
