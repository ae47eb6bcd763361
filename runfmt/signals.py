"""The kernel signals by name: the values of kernel_events.signal.

The one list of them. The recorder's probes (capture/signals.py), both CLIs, the
report, the benchmarks and the probe-event contract's enum agree with it (a test
pins each); it stays free of numpy so `slocap --help` starts fast.
"""

SIGNAL_NAMES = ("dns", "retransmit", "connect", "runqueue", "cpu_steal", "tls", "mem_reclaim")
