"""What operators watch: Prometheus metrics (service, quality, GPU memory) and structured logs
that never carry patient identifiers.
"""
