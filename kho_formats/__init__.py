"""kho-formats: read, build, check and convert Linux Kexec HandOver data."""

__version__ = "0.1.0"
