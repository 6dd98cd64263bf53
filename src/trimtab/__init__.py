"""trimtab: execute portfolio rebalance plans safely and cheaply."""
