"""slocap: the recorder. Loads CO-RE eBPF probes and writes run directories."""

from importlib.metadata import version

__version__ = version("llm-slo-ebpf-toolkit")
