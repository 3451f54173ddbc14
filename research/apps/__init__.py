"""What a trained run is used for: evaluation (clean and corrupted), prediction, the serving
export, model descriptions, and the table across runs."""
