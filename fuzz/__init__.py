"""Fuzzing harness for the sans-I/O core (make fuzz)."""
