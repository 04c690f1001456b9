"""PyTorch CPU twin of `vae-gpu train --iwae-k K` for the speed ratio in the README: Burda
et al.'s one-layer model (784-200-200-z50, tanh, Bernoulli), dynamic binarization, K
samples per record, Adam (eps 1e-4). Prints records per second over STEPS steps after a
warm-up. Usage: python3 torch_iwae_step.py K [BATCH] [STEPS] [THREADS]
(random pixels stand in for the data: the speed does not depend on them)."""
import math
import sys
import time

import torch
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

k = int(sys.argv[1])
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 20
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 50
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else torch.get_num_threads())
torch.manual_seed(1)
D, H, Z = 784, 200, 50
enc = nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, H), nn.Tanh(), nn.Linear(H, 2 * Z))
dec = nn.Sequential(nn.Linear(Z, H), nn.Tanh(), nn.Linear(H, H), nn.Tanh(), nn.Linear(H, D))
opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3, eps=1e-4)
pixels = torch.rand(10000, D)


def step(i):
    x = torch.bernoulli(pixels[(i * batch) % 9000:(i * batch) % 9000 + batch])
    mu, logvar = enc(x).chunk(2, 1)
    mu, logvar = mu.repeat_interleave(k, 0), logvar.repeat_interleave(k, 0)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    logits = dec(z)
    log_px = -F.binary_cross_entropy_with_logits(
        logits, x.repeat_interleave(k, 0), reduction="none").sum(1)
    log_w = log_px + Normal(0.0, 1.0).log_prob(z).sum(1) \
        - Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
    loss = -(torch.logsumexp(log_w.view(batch, k), 1) - math.log(k)).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()


for i in range(5):
    step(i)
start = time.perf_counter()
for i in range(steps):
    step(i)
print(f"{steps * batch / (time.perf_counter() - start):.1f}")
