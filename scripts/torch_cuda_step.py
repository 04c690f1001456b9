"""PyTorch eager on the GPU (CUDA): samples/s of one training step (forward, loss, backward,
Adam) of the same modules `../shared/peers/torch_step.py` times on the CPU (vae_common's
VAE, ConvVAE, ResNetVAE), on random data. The GPU is synchronized around the timed steps.
Usage: python torch_cuda_step.py mlp|conv|resnet BATCH STEPS   (vae_common.py beside it)"""
import sys
import time

import torch
from vae_common import VAE, ConvVAE, ResNetVAE, loss_parts

arch, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dev = torch.device("cuda")
torch.manual_seed(0)
model = {"mlp": VAE, "conv": ConvVAE, "resnet": ResNetVAE}[arch]().to(dev)
opt = torch.optim.Adam(model.parameters(), 1e-3)
x = torch.rand(batch, 1, 28, 28, device=dev)


def step():
    opt.zero_grad()
    r, mu, lv = model(x)
    b, k = loss_parts(r, x, mu, lv)
    (b + k).backward()
    opt.step()


for _ in range(10):
    step()
torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(steps):
    step()
torch.cuda.synchronize()
dt = (time.perf_counter() - t) / steps
print(f"{batch / dt:.0f}")
