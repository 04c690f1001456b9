"""vae-gpu's sequence VAE (train --arch gru) twinned in PyTorch: MOSES's model
(moses/vae/model.py) on the same data, tokens and vocabulary, trained the same way, for the
side-by-side figures of the README (speed, and the validity of samples by RDKit).

  bench: one warm-up step, then STEPS timed training steps; prints target tokens/s.
  train: EPOCHS epochs (KL weight 0 to BETA linearly over the run, as MOSES and vae-gpu;
         Adam, clip 50), then SAMPLES molecules from N(0, I) at temperature 1, up to 100
         tokens; prints validity, uniqueness and novelty by RDKit (canonical SMILES).

Run with the PyTorch venv of ../shared/peers (RDKit for train: pip install rdkit), e.g.
  python scripts/torch_gru.py bench --batch 256 --steps 5 --hidden 128,256 --latent 64
"""
import argparse
import gzip
import json
import random
import re
import time

import torch
from torch import nn
from torch.nn import functional as F

TOKEN = re.compile(r"\[[^\]]*\]|Cl|Br|%\d\d|.")


def tokenize(s):
    return TOKEN.findall(s)


class VAE(nn.Module):  # moses/vae/model.py, sizes as arguments
    def __init__(self, v, e, he, z, hd, layers, pad):
        super().__init__()
        self.pad = pad
        self.x_emb = nn.Embedding(v, e, pad)
        if e == v:  # MOSES's one-hot start
            with torch.no_grad():
                self.x_emb.weight.copy_(torch.eye(v))
        self.encoder_rnn = nn.GRU(e, he, batch_first=True)
        self.q_mu = nn.Linear(he, z)
        self.q_logvar = nn.Linear(he, z)
        self.decoder_rnn = nn.GRU(e + z, hd, num_layers=layers, batch_first=True)
        self.decoder_lat = nn.Linear(z, hd)
        self.decoder_fc = nn.Linear(hd, v)

    def forward(self, x):
        lengths = [len(i) for i in x]
        packed = nn.utils.rnn.pack_sequence([self.x_emb(i) for i in x], enforce_sorted=False)
        _, h = self.encoder_rnn(packed, None)
        h = h[-1]
        mu, logvar = self.q_mu(h), self.q_logvar(h)
        z = mu + (logvar / 2).exp() * torch.randn_like(mu)
        kl = 0.5 * (logvar.exp() + mu ** 2 - 1 - logvar).sum(1).mean()
        xp = nn.utils.rnn.pad_sequence(x, batch_first=True, padding_value=self.pad)
        emb = self.x_emb(xp)
        inp = torch.cat([emb, z.unsqueeze(1).repeat(1, emb.size(1), 1)], -1)
        inp = nn.utils.rnn.pack_padded_sequence(inp, lengths, batch_first=True, enforce_sorted=False)
        h0 = self.decoder_lat(z).unsqueeze(0).repeat(self.decoder_rnn.num_layers, 1, 1)
        out, _ = self.decoder_rnn(inp, h0)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        y = self.decoder_fc(out)
        recon = F.cross_entropy(y[:, :-1].reshape(-1, y.size(-1)), xp[:, 1:].reshape(-1), ignore_index=self.pad)
        return recon, kl

    @torch.no_grad()
    def sample(self, n, bos, eos, max_len=100, temp=1.0):
        z = torch.randn(n, self.q_mu.out_features)
        h = self.decoder_lat(z).unsqueeze(0).repeat(self.decoder_rnn.num_layers, 1, 1)
        w = torch.full((n,), bos, dtype=torch.long)
        out = torch.full((n, max_len), self.pad, dtype=torch.long)
        done = torch.zeros(n, dtype=torch.bool)
        for t in range(max_len):
            x = torch.cat([self.x_emb(w), z], -1).unsqueeze(1)
            o, h = self.decoder_rnn(x, h)
            p = F.softmax(self.decoder_fc(o.squeeze(1)) / temp, -1)
            w = torch.multinomial(p, 1)[:, 0]
            out[~done, t] = w[~done]
            done = done | (w == eos)
            if done.all():
                break
        return out


def load(path, max_len=100, test_fraction=0.1):
    with gzip.open(path, "rt") as f:
        rows = [r.strip() for r in f.read().split("\n")[1:] if r.strip()]
    rows = [r for r in rows if len(tokenize(r)) <= max_len]
    random.Random(0).shuffle(rows)
    n_test = round(len(rows) * test_fraction)
    train = rows[n_test:]
    tokens = sorted({t for r in train for t in tokenize(r)})
    return train, tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["bench", "train"])
    ap.add_argument("--data", default="assets/moses/smiles.csv.gz")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--hidden", default="256,512")
    ap.add_argument("--latent", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--beta", type=float, default=0.05)
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train, tokens = load(a.data)
    c2i = {t: i for i, t in enumerate(tokens)}
    bos, eos, pad = len(tokens), len(tokens) + 1, len(tokens) + 2
    v = len(tokens) + 3
    he, hd = (int(h) for h in a.hidden.split(","))
    model = VAE(v, v, he, a.latent, hd, a.layers, pad)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    enc = [torch.tensor([bos] + [c2i[t] for t in tokenize(s)] + [eos]) for s in train]

    def step(batch, kl_w):
        recon, kl = model(batch)
        loss = recon + kl_w * kl
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 50)
        opt.step()
        return sum(len(s) - 1 for s in batch)

    if a.mode == "bench":
        order = list(range(len(enc)))
        random.Random(a.seed).shuffle(order)
        batches = [[enc[order[(i * a.batch + k) % len(order)]] for k in range(a.batch)] for i in range(a.steps + 1)]
        step(batches[0], a.beta)
        start = time.perf_counter()
        tokens_done = sum(step(b, a.beta) for b in batches[1:])
        secs = time.perf_counter() - start
        print(json.dumps({"tokens_per_s": tokens_done / secs, "sequences_per_s": a.steps * a.batch / secs}))
        return
    from rdkit import Chem, RDLogger
    RDLogger.DisableLog("rdApp.*")
    for epoch in range(a.epochs):
        kl_w = a.beta * epoch / a.epochs
        order = list(range(len(enc)))
        random.Random(a.seed + epoch).shuffle(order)
        start = time.perf_counter()
        for i in range(0, len(order), a.batch):
            step([enc[j] for j in order[i:i + a.batch]], kl_w)
        print(f"epoch {epoch + 1}: {time.perf_counter() - start:.0f} s", flush=True)
    model.eval()
    strings = []
    for i in range(0, a.samples, 1000):
        for row in model.sample(min(1000, a.samples - i), bos, eos).tolist():
            s = []
            for t in row:
                if t in (eos, pad):
                    break
                s.append(tokens[t] if t < len(tokens) else "")
            strings.append("".join(s))

    def canon(s):
        m = Chem.MolFromSmiles(s) if s else None
        return Chem.MolToSmiles(m) if m is not None else None

    valid = [c for c in map(canon, strings) if c]
    unique = set(valid)
    known = {c for c in map(canon, train) if c}
    print(json.dumps({"generated": len(strings), "valid": len(valid) / len(strings),
                      "unique": len(unique) / max(1, len(valid)),
                      "novel": len(unique - known) / max(1, len(unique))}))


if __name__ == "__main__":
    main()
