"""Shared math of the sb3-stein algorithms (SVGD, critic passes, distributions, input checks)."""
