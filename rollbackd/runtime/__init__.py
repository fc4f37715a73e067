"""The daemon's process: logging, scheduling, serving, leadership."""
