/* An Arduino-class board (ATmega328P at 16 MHz, e.g. an Arduino Uno) speaking the physnn
 * serial protocol on its USB serial port at 115200 baud.
 *
 * The demo device: 6 inputs drive the 6 PWM pins (through an RC low-pass each, a crude DAC)
 * and 6 outputs are the voltages on ADC0..ADC5. Wire your physical system in between, or
 * replace hw_measure() below with the code that sets your actuators (DAC, SLM, speaker,
 * metasurface bias lines) and reads your sensors. Keep FW_N_IN / FW_N_OUT and the domain in
 * physnn_fw.h in step with what it does: the host checks inputs against that domain before
 * sending anything.
 */
#include <avr/eeprom.h>
#include <avr/interrupt.h>
#include <avr/io.h>
#include <util/delay.h>

#ifndef BAUD
#define BAUD 115200
#endif
#define BAUD_TOL 3 /* 115200 baud from 16 MHz is 2.1 % off, as on every Arduino */
#include <util/setbaud.h>

#include "physnn_fw.h"

/* ======================================================================================
 * YOUR DAC/ADC CODE GOES HERE: hw_setup() once at boot, hw_measure() once per sample.
 * x[i] is inside [FW_DOMAIN_LO, FW_DOMAIN_HI]; write FW_N_OUT floats to y.
 * hw_measure must finish well within the host's timeout (the board sends no BUSY), so
 * FW_MAX_BATCH * (time of one sample) < timeout.
 * ====================================================================================== */
#define SETTLE_MS 2 /* RC filters and the system settle before reading */

static void hw_setup(void) {
    /* PWM outputs: OC0A PD6, OC0B PD5, OC1A PB1, OC1B PB2, OC2A PB3, OC2B PD3 */
    DDRD |= _BV(PD6) | _BV(PD5) | _BV(PD3);
    DDRB |= _BV(PB1) | _BV(PB2) | _BV(PB3);
    TCCR0A = _BV(COM0A1) | _BV(COM0B1) | _BV(WGM01) | _BV(WGM00); /* fast PWM, 8 bit */
    TCCR0B = _BV(CS00);                                            /* 62.5 kHz */
    TCCR1A = _BV(COM1A1) | _BV(COM1B1) | _BV(WGM10);                /* fast PWM, 8 bit */
    TCCR1B = _BV(WGM12) | _BV(CS10);
    TCCR2A = _BV(COM2A1) | _BV(COM2B1) | _BV(WGM21) | _BV(WGM20);
    TCCR2B = _BV(CS20);
    ADMUX = _BV(REFS0);                                     /* AVcc reference */
    ADCSRA = _BV(ADEN) | _BV(ADPS2) | _BV(ADPS1) | _BV(ADPS0); /* 125 kHz ADC clock */
}

static uint16_t adc_read(uint8_t channel) {
    ADMUX = (uint8_t)((ADMUX & 0xF0) | (channel & 0x0F));
    ADCSRA |= _BV(ADSC);
    while (ADCSRA & _BV(ADSC)) {
    }
    return ADC;
}

void hw_measure(const float *x, float *y) {
    volatile uint8_t *duty[6] = {&OCR0A, &OCR0B, &OCR1AL, &OCR1BL, &OCR2A, &OCR2B};
    for (uint8_t i = 0; i < FW_N_IN && i < 6; i++) {
        float u = (x[i] - FW_DOMAIN_LO) / (FW_DOMAIN_HI - FW_DOMAIN_LO);
        *duty[i] = (uint8_t)(u * 255.0f + 0.5f);
    }
    _delay_ms(SETTLE_MS);
    for (uint8_t j = 0; j < FW_N_OUT; j++) y[j] = adc_read(j % 6) * (5.0f / 1023.0f);
}
/* ===================================== end of your code ================================= */

/* ---- the serial line: interrupt-driven receive, so no byte is lost while measuring ---- */
#define RX_RING 128
static volatile uint8_t ring[RX_RING];
static volatile uint8_t head, tail;

ISR(USART_RX_vect) {
    uint8_t b = UDR0, next = (uint8_t)((head + 1) % RX_RING);
    if (next != tail) { /* a full ring drops the byte: the CRC will catch it */
        ring[head] = b;
        head = next;
    }
}

static void uart_init(void) {
    UBRR0H = UBRRH_VALUE;
    UBRR0L = UBRRL_VALUE;
#if USE_2X
    UCSR0A |= _BV(U2X0);
#else
    UCSR0A &= (uint8_t)~_BV(U2X0);
#endif
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00); /* 8N1 */
}

void hw_send(const uint8_t *data, uint16_t n) {
    while (n--) {
        while (!(UCSR0A & _BV(UDRE0))) {
        }
        UDR0 = *data++;
    }
}

/* ---- what survives a reset: .noinit RAM is not cleared by the C start-up code ---------- */
static fw_persist_t persist __attribute__((section(".noinit")));
fw_persist_t *hw_persist(void) { return &persist; }

static uint32_t EEMEM boots; /* a boot counter in EEPROM: a new boot id at every reset */
static uint32_t boot;
uint32_t hw_boot_id(void) { return boot; }

int main(void) {
    boot = eeprom_read_dword(&boots) + 1;
    eeprom_update_dword(&boots, boot);
    hw_setup();
    uart_init();
    fw_init();
    sei();
    for (;;) {
        while (tail != head) {
            uint8_t b = ring[tail];
            tail = (uint8_t)((tail + 1) % RX_RING);
            fw_rx_byte(b);
        }
    }
}
