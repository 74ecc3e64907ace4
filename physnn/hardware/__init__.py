"""Lab hardware over a serial link: the framed protocol, the serial device, the emulator.

The serial device is an ordinary :class:`~physnn.core.Device`; the emulator serves any
registered simulated device with the same protocol over a pseudo-terminal or a loopback
socket, with fault injection, so the whole hardware path runs without a board.
"""
