"""quantship: full-precision checkpoint -> validated, served, rolled-out quantized model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("quantship")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"
