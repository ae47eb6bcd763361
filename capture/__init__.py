"""slocap: the recorder. Loads CO-RE eBPF probes and writes run directories."""
