"""The names of the files in a training run folder (``worldvid.run_folder.RunFolder`` reads and writes them)."""

TRAIN_CONFIG = "train_config.json"
MODEL_DIR = "model"
METRICS_CSV = "metrics.csv"
METRICS_JSONL = "metrics.jsonl"
