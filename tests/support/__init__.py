"""What several test modules share and none of them owns: data paths, synthetic-data builders and helpers."""
