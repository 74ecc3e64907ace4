/* The firmware's protocol core as a native program: bytes on stdin, replies on stdout.
 * tests/test_firmware.py runs it behind a pseudo-terminal and drives it with the real
 * driver, so the C implementation of the protocol is tested without a board.
 *
 * Its device is a known function: y[j] = 2 * x[j % FW_N_IN] + j (exact in float32).
 */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "physnn_fw.h"

void hw_send(const uint8_t *data, uint16_t n) {
    while (n) {
        ssize_t k = write(1, data, n);
        if (k <= 0) exit(0); /* the line is gone */
        data += k;
        n = (uint16_t)(n - k);
    }
}

void hw_measure(const float *x, float *y) {
    for (int j = 0; j < FW_N_OUT; j++) y[j] = 2.0f * x[j % FW_N_IN] + (float)j;
}

static fw_persist_t persist;
fw_persist_t *hw_persist(void) { return &persist; }

uint32_t hw_boot_id(void) { return (uint32_t)getpid() ^ (uint32_t)time(NULL); }

int main(void) {
    uint8_t buf[256];
    fw_init();
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n <= 0) return 0;
        for (ssize_t i = 0; i < n; i++) fw_rx_byte(buf[i]);
    }
}
