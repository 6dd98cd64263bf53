"""Adapters that implement the ports: the simulated exchange, clocks, brokers."""
