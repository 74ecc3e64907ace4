/* Reference firmware for the physnn serial protocol, version 1 (devices/PROTOCOL.md).
 *
 * protocol.c is plain C99 with no hardware in it: the frame decoder, the checksums and the
 * message handling. A board file supplies the hw_* functions below: board_avr.c for an
 * Arduino-class ATmega328P (where YOUR DAC/ADC code goes), board_host.c for a native test
 * program that the Python test suite drives over a pseudo-terminal.
 *
 * Every FW_* setting can be overridden from the compiler command line (-DFW_N_IN=8 ...).
 */
#ifndef PHYSNN_FW_H
#define PHYSNN_FW_H

#include <stdint.h>

/* ---- what this board is: its device spec (reported in the OPEN reply) ---------------- */
#ifndef FW_N_IN
#define FW_N_IN 6 /* inputs per sample (DAC channels) */
#endif
#ifndef FW_N_OUT
#define FW_N_OUT 6 /* outputs per sample (ADC channels) */
#endif
#ifndef FW_DOMAIN_LO
#define FW_DOMAIN_LO 0.0f /* allowed input range; the host never sends values outside it */
#endif
#ifndef FW_DOMAIN_HI
#define FW_DOMAIN_HI 1.0f
#endif
#ifndef FW_TIME_PER_QUERY_S
#define FW_TIME_PER_QUERY_S 0.002f /* device time of one sample (accounting) */
#endif
#ifndef FW_ENERGY_PER_QUERY_J
#define FW_ENERGY_PER_QUERY_J 0.0f /* energy of one sample (accounting) */
#endif
#ifndef FW_NAME
#define FW_NAME "avr-pwm-adc"
#endif
#ifndef FW_UNITS
#define FW_UNITS "V"
#endif
#ifndef FW_IDENTITY
#define FW_IDENTITY "physnn-fw-avr 1.0"
#endif

/* ---- how much it holds (RAM) -------------------------------------------------------- */
#ifndef FW_MAX_BATCH
#define FW_MAX_BATCH 4 /* samples per batch; the host splits larger batches */
#endif
#ifndef FW_MAX_PAYLOAD
#define FW_MAX_PAYLOAD 128 /* bytes of frame payload; the host sends smaller chunks */
#endif

#define FW_VERSION 1
#define FW_OVERHEAD 16

#if FW_MAX_PAYLOAD < 64 || FW_MAX_PAYLOAD > 65535
#error "FW_MAX_PAYLOAD must be in 64..65535"
#endif

/* ---- what survives a reset (kept in .noinit RAM on the AVR) -------------------------- */
typedef struct {
    uint32_t magic;
    uint64_t token;    /* the host device this state belongs to */
    uint64_t measured; /* samples measured for that token */
    uint32_t batch_id; /* the last measured batch (0: none) */
    uint32_t input_crc;
    uint32_t output_crc;
    uint16_t n; /* samples in it */
    float out[FW_MAX_BATCH * FW_N_OUT];
    uint32_t check; /* CRC-32 of everything above: garbage after power-on fails it */
} fw_persist_t;

/* ---- the board supplies these --------------------------------------------------------- */
void hw_send(const uint8_t *data, uint16_t n);   /* put bytes on the line */
void hw_measure(const float *x, float *y);       /* one sample: FW_N_IN in, FW_N_OUT out */
uint32_t hw_boot_id(void);                       /* differs at every boot */
fw_persist_t *hw_persist(void);                  /* memory that survives a reset */

/* ---- the protocol core supplies these ------------------------------------------------- */
void fw_init(void);           /* after reset: wipe the link state, check the persistent state */
void fw_rx_byte(uint8_t b);   /* every byte received, in order */
uint32_t fw_crc32(const uint8_t *p, uint16_t n, uint32_t crc); /* crc = 0 to start */
uint16_t fw_crc16(const uint8_t *p, uint16_t n);

#endif
