"""Calibration: characterise a device (sweeps, noise floor, SNR, dynamic range, saturation,
drift), import measurements made elsewhere, check a device against its record.

Every path ends in one format, the HDF5 calibration record (``calibration/README.md``);
surrogate devices (``physnn.twins.surrogate``) are fitted to it.
"""

from .analysis import summarize, summary_text
from .check import DriftReport, check
from .importer import import_measurements
from .plot import plot_record
from .record import CalibrationRecord, Section, is_record, read_record, write_record
from .sweep import CalibrationSettings, calibrate, uniform_inputs

__all__ = [
    "CalibrationRecord", "CalibrationSettings", "DriftReport", "Section", "calibrate", "check",
    "import_measurements", "is_record", "plot_record", "read_record", "summarize", "summary_text",
    "uniform_inputs", "write_record",
]
