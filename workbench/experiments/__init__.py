"""Runs of several variants, seeds, sweeps and studies: the phases of a comparison and the loops that drive them."""
