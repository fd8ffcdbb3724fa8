"""Quantization backends behind one interface; each variant lands in variants/<name>/."""
