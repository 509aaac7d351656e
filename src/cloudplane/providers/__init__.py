"""Compute providers behind one small async interface; see base.py for the contract."""
