"""Layer 6, many runs: grids, their records, statistics, reports and figures."""
