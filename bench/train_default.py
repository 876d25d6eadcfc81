import torch
torch.set_num_threads(2)
from core.segmentation.train import TrainConfig, train
cfg = TrainConfig(iterations=8000, val_every=250, batch_size=16, patch=256, scale=0.5, workers=1, max_minutes=125, plateau_patience=2)
train("../shared/data/lumenstone", "runs/default", cfg, log=lambda s: print(s, flush=True), progress=False)
