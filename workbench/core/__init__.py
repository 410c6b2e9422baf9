"""The ground every layer stands on: a run's settings and their checks, events, files written whole, paths and
the statistics. Imports nothing else of the workbench."""
