"""A sweep as an Optuna study: each trial is one setting and one seed, trained into its own run folder.

The study lives in a storage Optuna opens: an SQLite file in the sweep's folder by default (nothing to install
or start), any SQLAlchemy URL (PostgreSQL, MySQL) so workers on several machines share it, or a journal file
for a shared filesystem. Its definition (the base settings, the grid or the search space, the seeds) is kept in
the study itself, so a worker joining it needs nothing but the storage, the study's name and a runs folder.

A grid is Optuna's GridSampler over (setting, seed). A search is a multi-objective TPE sampler over ranges
(rank on a log scale, targets, bits, 4-bit type, double quantization, alpha, learning rate, dropout): score up,
peak memory (or training time) down, with the memory estimate as a constraint, so a setting that will not fit
is never loaded. Seeds are repeated trials of one setting.

Many workers: every trial sends a heartbeat (SQL storages); a worker that finds another's trial silent past the
grace period marks it failed and Optuna's RetryFailedTrialCallback queues it again.

Its parts: `storage` (where it lives), `space` (what it searches), `worker` (one worker's trials), `workers`
(many worker processes, and a sweep's plan run as a study) and `reading` (what it holds, read back).
"""
