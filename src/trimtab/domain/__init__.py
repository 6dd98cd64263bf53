"""Pure types and rules: money, orders, quotes, plans, results, errors. No I/O."""
