"""The recipe trials of issue 14 on a validation split (train: the first 50,000 training images,
validation: the last 10,000), kept as the record of how the JSON files beside it were made:

    python experiments/results/validation/trial.py --seed 100 --schedule constant --out constant.json
    python experiments/results/validation/trial.py --seed 100 --schedule cosine --out cosine.json

A throwaway written before the optimizers had schedules and averaging: it patches a per-step
learning rate and Keras-style moving averages (decays 0.999 and 0.9995, no warm-up) around the
optimizer, and evaluates the raw weights and both averages after every epoch. The test set is
never touched. (The library's own version of the chosen recipe: ``python -m experiments.mnist
--validation 10000``.)
"""
import argparse, json, math, sys, time
import numpy as np

from convnet.architectures import mnist_cnn
from convnet import optimizers
from convnet.datasets import load_mnist, preprocess
from convnet.augment import RandomAffine

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=100)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--schedule", default="constant")   # constant | cosine | tail:K (linear to 0 over last K epochs)
p.add_argument("--ema", default="0.999,0.9995")
p.add_argument("--dropout", default="0.25,0.25,0.5")
p.add_argument("--augment", default="")            # rot,zoom,shift
p.add_argument("--out", required=True)
a = p.parse_args()

(x, y), _ = load_mnist(verbose=False)
x = preprocess(x); y = y.astype(np.int64)
xtr, ytr, xva, yva = x[:50000], y[:50000], x[50000:], y[50000:]
model = mnist_cnn(a.seed, [float(r) for r in a.dropout.split(",")])
opt = optimizers.Adam(a.lr)
model.compile(opt, "sparse_categorical_crossentropy", ["accuracy"])
steps_per_epoch = math.ceil(len(xtr) / 32)
total = steps_per_epoch * a.epochs


def lr_at(step):
    if a.schedule == "constant":
        return a.lr
    if a.schedule == "cosine":
        return a.lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if a.schedule.startswith("tail:"):
        k = int(a.schedule[5:]) * steps_per_epoch
        start = total - k
        return a.lr if step < start else a.lr * (total - step) / k
    raise SystemExit("bad schedule")


decays = [float(d) for d in a.ema.split(",") if d]
avgs = {d: None for d in decays}
orig_apply = opt.apply


def apply(pg):
    pg = list(pg)
    opt.learning_rate = lr_at(opt.iterations)
    orig_apply(pg)
    for d in decays:
        if avgs[d] is None:
            avgs[d] = [p.copy() for _, p, _ in pg]
        else:
            m = np.float32(d)
            for s, (_, p, _) in zip(avgs[d], pg):
                s *= m
                s += (1 - m) * p


opt.apply = apply
if a.augment:
    r, z, s = (float(v) for v in a.augment.split(","))
    aug = RandomAffine(r, z, s)
    arng = np.random.default_rng([a.seed, 12345])
    orig_step = model.train_step
    model.train_step = lambda xb, yb: orig_step(aug(xb, arng), yb)

rec = {"args": vars(a), "val_acc": [], "val_loss": [], **{f"ema{d}_val_acc": [] for d in decays}, **{f"ema{d}_val_loss": [] for d in decays}, "loss": [], "acc": [],
       "seconds": []}


class CB:
    model = None

    def on_epoch_end(self, epoch, logs):
        rec["val_acc"].append(logs["val_accuracy"]); rec["val_loss"].append(logs["val_loss"])
        rec["loss"].append(logs["loss"]); rec["acc"].append(logs["accuracy"]); rec["seconds"].append(logs["seconds"])
        raw = model.get_weights()
        for d in decays:
            model.set_weights(avgs[d])
            l, acc = model.evaluate(xva, yva)
            rec[f"ema{d}_val_acc"].append(acc); rec[f"ema{d}_val_loss"].append(l)
        model.set_weights(raw)
        print(epoch + 1, {k: v[-1] for k, v in rec.items() if isinstance(v, list) and v}, flush=True)
        json.dump(rec, open(a.out, "w"), indent=1)


model.fit(xtr, ytr, epochs=a.epochs, batch_size=32, validation_data=(xva, yva), seed=a.seed, verbose=0, callbacks=[CB()])
json.dump(rec, open(a.out, "w"), indent=1)
