"""slocap: the recorder. Loads CO-RE eBPF probes and writes run directories."""

__version__ = "0.1.0"
