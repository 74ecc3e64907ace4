"""Lab hardware over a serial link: the framed protocol, the serial device, the emulator.

The serial device is an ordinary ``physnn.core.Device``; the emulator serves any
registered simulated device with the same protocol over a pseudo-terminal or a loopback
socket, with fault injection, so the whole hardware path runs without a board. One concept
per module:

- ``frames``, ``protocol``: the bytes on the wire (frames and the decoder; message payloads);
- ``transport``: how bytes travel (the ``Transport`` protocol, pyserial ports and URLs);
- ``port``, ``link``: a port shared by its devices, and one device's request/response state
  machine (sequence numbers, bounded retries, timeouts, resync, reopen after a disconnect);
- ``serial_device``: the ``serial`` device kind (settings, spec, validation, batching);
- ``board``, ``faults``, ``lines``, ``emulator``: the emulated firmware and its physics, the
  faults on its line, the pty and socket it serves on, and ``physnn emulate``;
- ``memory``: an in-memory line with scripted faults and a virtual clock, for tests.
"""
