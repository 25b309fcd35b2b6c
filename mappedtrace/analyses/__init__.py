"""Analyses over the heap graph (DESIGN step 10): leaks, …"""
