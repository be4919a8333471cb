"""Operators' tooling: inspecting and moving what the engine's consumer groups committed."""
