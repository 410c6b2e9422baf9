"""What a run leaves behind, and reading it back: a run's results and its folder, and the scan of a runs folder."""
