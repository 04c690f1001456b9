"""PyTorch CPU twin of one cell of Burda et al.'s table as vae-gpu trains it (README,
"Tighter likelihoods"): their one-layer (784-200-200-z50) or two-layer
(784-200-200-z100-100-100-z50) model, tanh, Bernoulli output whose bias starts at the logit
of each pixel's training mean (clamped to [1e-3, 1 - 1e-3]), Fashion-MNIST binarized anew
each time an image is drawn, batch 20, Adam (lr 1e-3, eps 1e-4) on the batch's summed
objective: the K-sample ELBO ("vae", equal weights) or the IWAE bound ("iwae"). Then the
IWAE bound with 1000 samples on the first 1000 test images (one fixed binarization).
Usage: python3 torch_burda.py LAYERS(1|2) vae|iwae K [EPOCHS] [SEED] [THREADS]
Prints: layers, objective, K, epochs, records/s, test NLL bound."""
import gzip
import math
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

layers, objective, k = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 1
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 1
torch.set_num_threads(int(sys.argv[6]) if len(sys.argv) > 6 else torch.get_num_threads())
torch.manual_seed(seed)
ROOT = "/usr/share/datasets/fashion-mnist"


def idx(name):
    for path in (f"{ROOT}/{name}", f"{ROOT}/{name}.gz"):
        try:
            raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
            return torch.tensor(np.frombuffer(raw[16:], np.uint8).reshape(-1, 784) / 255.0,
                                dtype=torch.float32)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(name)


train, test = idx("train-images-idx3-ubyte"), idx("t10k-images-idx3-ubyte")[:1000]


def mlp(sizes, last):
    mods = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*mods, nn.Linear(sizes[-1], last))


# Per stochastic layer (bottom first): q's network from below, and p's from above.
zs = [50] if layers == 1 else [100, 50]
q = nn.ModuleList([mlp([784, 200, 200], 2 * zs[0])] +
                  [mlp([zs[i - 1], zs[i - 1], zs[i - 1]], 2 * zs[i]) for i in range(1, len(zs))])
p = nn.ModuleList([mlp([zs[0], 200, 200], 784)] +
                  [mlp([zs[i], zs[i - 1], zs[i - 1]], 2 * zs[i - 1]) for i in range(1, len(zs))])
mean = train.mean(0).clamp(1e-3, 1 - 1e-3).double()
with torch.no_grad():
    p[0][-1].bias.copy_(torch.log(mean / (1 - mean)).float())
params = list(q.parameters()) + list(p.parameters())
opt = torch.optim.Adam(params, lr=1e-3, eps=1e-4)


def log_w(x, samples):
    """log p(x, z) - log q(z | x) for `samples` draws per record, [records, samples]."""
    h = x.repeat_interleave(samples, 0)
    logq, codes = 0.0, []
    for net in q:
        mu, lv = net(h).chunk(2, 1)
        z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
        logq = logq + Normal(mu, torch.exp(0.5 * lv)).log_prob(z).sum(1)
        codes.append(z)
        h = z
    logp = Normal(0.0, 1.0).log_prob(codes[-1]).sum(1)
    for i in range(len(codes) - 1, 0, -1):
        mu, lv = p[i](codes[i]).chunk(2, 1)
        logp = logp + Normal(mu, torch.exp(0.5 * lv)).log_prob(codes[i - 1]).sum(1)
    logits = p[0](codes[0])
    logp = logp - F.binary_cross_entropy_with_logits(
        logits, x.repeat_interleave(samples, 0), reduction="none").sum(1)
    return (logp - logq).view(-1, samples)


start = time.perf_counter()
for epoch in range(epochs):
    order = torch.randperm(len(train))
    for b in range(0, len(train), 20):
        x = torch.bernoulli(train[order[b:b + 20]])
        lw = log_w(x, k)
        if objective == "iwae":
            loss = -(torch.logsumexp(lw, 1) - math.log(k)).sum()
        else:
            loss = -lw.mean(1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
rate = epochs * len(train) / (time.perf_counter() - start)
g = torch.Generator().manual_seed(0)
xs = torch.bernoulli(test, generator=g)
with torch.no_grad():
    bound = 0.0
    for x in xs:
        lw = torch.cat([log_w(x[None], 250) for _ in range(4)], 1)
        bound -= (torch.logsumexp(lw, 1) - math.log(lw.shape[1])).item()
print(f"{layers} {objective} {k} {epochs} {rate:.0f} {bound / len(xs):.2f}")
