"""Tests of the Monte Carlo engine (varprop.montecarlo)."""
