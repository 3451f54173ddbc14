"""What a trained run is used for: evaluation (clean and corrupted), prediction, the serving
export, model descriptions, the table across runs, and their pictures."""
