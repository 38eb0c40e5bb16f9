"""Layer 1, pure numpy: strategies, lambda schedules, calibration, uncertainty arrays, derived seeds."""
