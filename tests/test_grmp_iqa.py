"""GRMP-IQA: the gradient projection, checkpoints and the metric, and that both training stages learn.

The learning tests run on the random ``test-tiny`` backbone, whose frozen features carry little but
brightness: a few-shot task it can learn is ranking low-light (under-exposure) levels of photo crops
(blur levels are beyond it at test budgets). Meta-tasks are exposure-family distortions of Kodak24 crops;
fine-tuning and validation use McMaster18 crops, so the held-out part is the photo content.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from clipiq.cli.main import main as cli
from clipiq.clip.checkpoint import CheckpointError, read_method_checkpoint, save_method_checkpoint
from clipiq.core.config import load_config
from clipiq.data.io import list_images, load_image, save_image
from clipiq.data.labels import IQALabels, IQASample
from clipiq.data.splits import few_shot
from clipiq.degrade import apply
from clipiq.iqa import create_metric
from clipiq.iqa.grmp_iqa import GRMPIQAModel, build_model, load_meta_init, project_gradient
from clipiq.train import grmp_finetune as gf
from clipiq.train import grmp_pretrain as gp
from clipiq.train.engine import Trainer, seed_everything
from clipiq.train.protocol import IQATask

REPO = Path(__file__).resolve().parents[1]
TINY_PRE = REPO / "configs" / "grmp-iqa" / "tiny-pretrain.yaml"
TINY_FT = REPO / "configs" / "grmp-iqa" / "tiny-finetune.yaml"
CPU = torch.device("cpu")
TINY = {"backbone": "test-tiny", "vpt_length": 4, "tune_blocks": 1}


# ---------------------------------------------------------------------------------------------------------
# gradient projection


def test_project_gradient_cases():
    gd = torch.tensor([2.0, 1.0])
    # aligned (gd.gg = 2 > 0): gd - lam * 2 / 1 * gg
    torch.testing.assert_close(project_gradient(gd, torch.tensor([1.0, 0.0]), 1.0), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(project_gradient(gd, torch.tensor([1.0, 0.0]), 5.0), torch.tensor([-8.0, 1.0]))
    torch.testing.assert_close(project_gradient(torch.tensor([1.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 1.0]), 1.0),
                               torch.tensor([0.5, 1.0, -0.5]))
    # opposed (gd.gg < 0) and orthogonal (gd.gg = 0): unchanged
    torch.testing.assert_close(project_gradient(gd, torch.tensor([-1.0, 0.0]), 5.0), gd)
    torch.testing.assert_close(project_gradient(gd, torch.tensor([-1.0, 2.0]), 5.0), gd)
    # lambda 0: unchanged even when aligned; a zero gg: unchanged
    torch.testing.assert_close(project_gradient(gd, torch.tensor([1.0, 0.0]), 0.0), gd)
    torch.testing.assert_close(project_gradient(gd, torch.zeros(2), 5.0), gd)
    # per-parameter lists: one dot product over the concatenation (here -2 < 0, so nothing changes, although
    # the first tensors alone are aligned), and the inputs are left alone
    gds, ggs = [torch.tensor([1.0]), torch.tensor([[1.0]])], [torch.tensor([1.0]), torch.tensor([[-3.0]])]
    out = project_gradient(gds, ggs, 5.0)
    torch.testing.assert_close(out, gds)
    out = project_gradient([torch.tensor([2.0]), torch.tensor([[1.0]])], [torch.tensor([1.0]), torch.tensor([[0.0]])],
                           5.0)
    torch.testing.assert_close(out, [torch.tensor([-8.0]), torch.tensor([[1.0]])])
    assert gds[0].item() == 1.0


def test_project_gradient_refuses_bad_input():
    with pytest.raises(ValueError, match="lam must be"):
        project_gradient(torch.ones(2), torch.ones(2), -1.0)
    with pytest.raises(ValueError, match="shape"):
        project_gradient([torch.ones(2)], [torch.ones(3)], 1.0)
    with pytest.raises(ValueError, match="2 tensors but gg has 1"):
        project_gradient([torch.ones(2), torch.ones(1)], [torch.ones(2)], 1.0)
    with pytest.raises(TypeError, match="both"):
        project_gradient(torch.ones(2), [torch.ones(2)], 1.0)


def test_what_trains_in_each_stage_and_the_vpt_init():
    """The authors' fine-tuning set: context, last blocks of both towers, final norms, prompt_norm; VPT frozen."""
    torch.manual_seed(0)
    vit = {"backbone": "test-tiny", "vpt_length": 4}
    model = build_model({**vit, "tune_blocks": 2}, device=CPU)  # test-tiny's towers have 2 blocks: all tune
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"text_prompts.ctx", "prompt_norm.weight", "prompt_norm.bias"} | {
        n for n, _ in model.named_parameters()
        if n.startswith(("clip.visual.transformer.blocks.", "clip.text.transformer.blocks.", "clip.visual.ln_post.",
                         "clip.text.ln_final."))}
    one = {n for n, p in build_model({**vit, "tune_blocks": 1}, device=CPU).named_parameters() if p.requires_grad}
    assert not any(n.startswith(("clip.visual.transformer.blocks.0.", "clip.text.transformer.blocks.0.",
                                 "vision_prompts.")) for n in one)
    vpt = {n for n, p in build_model({**vit, "tune_blocks": 1, "train_vpt": True}, device=CPU).named_parameters()
           if p.requires_grad}
    assert vpt - one == {"vision_prompts.tokens", "vision_prompts.proj.weight", "vision_prompts.proj.bias"}
    pre = build_model({**vit, "tune_blocks": 1}, stage="pretrain", device=CPU)
    assert {n for n, p in pre.named_parameters() if p.requires_grad} == set(pre.prompt_keys())
    # VPT's init: uniform in +-sqrt(6 / (3 * 16^2 + 32)) for test-tiny (patch 16, width 32); Kaiming projection
    bound = math.sqrt(6 / (3 * 16 * 16 + 32))
    tokens = model.vision_prompts.tokens
    assert tokens.abs().max() <= bound and tokens.abs().max() > 0.9 * bound
    assert model.vision_prompts.proj.bias.abs().max() == 0
    assert abs(float(model.vision_prompts.proj.weight.std()) - math.sqrt(2 / 32)) < 0.05
    # prompt_norm sits before ln_post on the vision path; at its identity start it changes nothing
    x = torch.rand(2, 3, 224, 224)
    visual = model.eval().clip.visual  # eval: no prompt dropout
    with torch.no_grad():
        plain = visual.forward_tokens(visual.embed_patches(x), deep_prompts=model.vision_prompts()).pooled
        torch.testing.assert_close(model.image_features(x), plain, atol=1e-4, rtol=1e-4)
        model.prompt_norm.weight.uniform_(0.5, 2.0)  # (a uniform bias would vanish in ln_post)
        assert (model.image_features(x) - plain).abs().max() > 1e-2


def test_backward_projects_every_trainable_tensor():
    torch.manual_seed(0)
    model = build_model(TINY, {"lambda": 5.0}, device=CPU)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for group in ("text_prompts.ctx", "prompt_norm.", "clip.visual.transformer.blocks.1.", "clip.visual.ln_post.",
                  "clip.text.transformer.blocks.1.", "clip.text.ln_final."):
        assert any(n.startswith(group) for n in names), f"{group} does not train"
    assert not any(n.startswith(("clip.visual.transformer.blocks.0.", "clip.text.transformer.blocks.0.",
                                 "zero_shot.", "vision_prompts.")) for n in names)
    model.train()
    losses = model.training_losses(torch.rand(4, 3, 224, 224), torch.tensor([0.0, 0.3, 0.7, 1.0]))
    assert set(losses) == {"loss", "kl"} and losses["kl"] > 0
    # Tilt the quality loss towards the KL so that the two gradients are aligned and the projection acts.
    losses = {"loss": losses["loss"] + 100 * losses["kl"], "kl": losses["kl"]}
    params = model.trainable_parameters()
    gd = torch.autograd.grad(losses["loss"], params, retain_graph=True, allow_unused=True)
    gg = torch.autograd.grad(losses["kl"], params, retain_graph=True, allow_unused=True)
    gd = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gd)]
    gg = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gg)]
    assert sum(float((a * b).sum()) for a, b in zip(gd, gg)) > 0
    expected = project_gradient(gd, gg, 5.0)
    model.backward(losses)
    unchanged = set()
    for name, p, e, d in zip(names, params, expected, gd):
        torch.testing.assert_close(p.grad, e, msg=f"{name}: .grad is not its slice of the projected gradient")
        if torch.equal(e, d):
            unchanged.add(name)
    assert unchanged == {"text_prompts.ctx"}  # the CoOp context has no path to the scene KL
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    assert -1 <= float(losses["grad_cos"]) <= 1


# ---------------------------------------------------------------------------------------------------------
# checkpoints and the metric


def _trained_like(model: GRMPIQAModel, seed: int = 1) -> GRMPIQAModel:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def test_checkpoint_round_trip_meta_init_and_backbone_refusal(tmp_path):
    torch.manual_seed(0)
    model = _trained_like(build_model(TINY, {"lambda": 5.0}, device=CPU))
    pl = model.checkpoint_payload({"model": TINY})
    assert not any(k.startswith("zero_shot.") for k in pl["state"])  # the frozen reference is not saved
    assert set(model.prompt_keys()) <= set(pl["state"])  # the frozen VPT tokens are, to rebuild the model
    path = save_method_checkpoint(tmp_path / "ft.safetensors", pl["method"], pl["state"], pl["config"], pl["backbone"])
    # checkpoints of the earlier structure (no prompt_norm; or without the frozen prompts) are refused by name
    for drop in ("prompt_norm.", "vision_prompts."):
        old = {k: v for k, v in pl["state"].items() if not k.startswith(drop)}
        old_path = save_method_checkpoint(tmp_path / "old.safetensors", pl["method"], old, pl["config"],
                                          pl["backbone"])
        with pytest.raises(CheckpointError, match=f"missing: {drop}"):
            create_metric("grmp-iqa", checkpoint=old_path, device="cpu")
    metric = create_metric("grmp-iqa", checkpoint=path, device="cpu")
    images = torch.rand(3, 3, 250, 300)
    before = model.predict(list(images))
    torch.testing.assert_close(metric(images), before)
    with torch.no_grad():  # the cached class embeddings follow in-place changes of what they depend on
        ctx = model.text_prompts.ctx
        ctx.add_(torch.randn(ctx.shape, generator=torch.Generator().manual_seed(3)))
    assert not torch.allclose(model.predict(list(images)), before)
    assert metric.model_id.startswith("test-tiny") and "ft.safetensors" in metric.model_id
    five = create_metric("grmp-iqa", checkpoint=path, device="cpu", test_crops=5)
    assert five.prepare(images[0]).shape == (5, 3, 224, 224) and five(images).shape == (3,)

    # A pre-training checkpoint holds only the prompts; fine-tuning takes them over.
    pre = _trained_like(build_model(TINY, None, stage="pretrain", device=CPU), seed=2)
    assert {n for n, p in pre.named_parameters() if p.requires_grad} == set(pre.prompt_keys())
    pl = pre.checkpoint_payload({"model": TINY})
    meta = save_method_checkpoint(tmp_path / "meta.safetensors", pl["method"], pl["state"], pl["config"],
                                  pl["backbone"])
    fresh = build_model({**TINY, "meta_init": str(meta)}, {"lambda": 5.0}, device=CPU)
    for k in pre.prompt_keys():
        torch.testing.assert_close(fresh.state_dict()[k], pre.state_dict()[k])
    # the tuned blocks still start from the backbone's own weights
    torch.testing.assert_close(fresh.clip.visual.ln_post.weight, build_model(TINY).clip.visual.ln_post.weight)

    with pytest.raises(CheckpointError, match="backbone"):
        create_metric("grmp-iqa", checkpoint=path, model="degradation-clip", device="cpu")
    with pytest.raises(CheckpointError, match="backbone"):
        load_meta_init(build_model({**TINY, "backbone": "degradation-clip"}, device=CPU), meta)
    with pytest.raises(CheckpointError, match="shape"):
        load_meta_init(build_model({**TINY, "vpt_length": 6}, device=CPU), meta)


def test_train_crops_test_draws_flipped_or_plain_test_crops():
    model = build_model({**TINY, "test_crops": 5, "train_crops": "test", "train_resize": 244,
                         "test_resize": 244}, device=CPU)
    img = torch.rand(3, 260, 300)
    crops = model.eval_views(img)
    allowed = [*crops, *crops.flip(-1)]
    drawn = [model.train_views(img, np.random.default_rng(s)) for s in range(30)]
    hits = {next(i for i, c in enumerate(allowed) if torch.equal(c, d)) for d in drawn}
    assert len(hits) >= 6  # several crops, both plain and flipped
    assert any(h < 5 for h in hits) and any(h >= 5 for h in hits)
    with pytest.raises(ValueError, match="train_crops must be one of random, test"):
        build_model({**TINY, "train_crops": "centre"}, device=CPU)


def test_the_shipped_checkpoint_scores_with_no_arguments():
    from clipiq.iqa.grmp_iqa import DEFAULT_BACKBONE, GRMPIQA, SHIPPED

    assert DEFAULT_BACKBONE in SHIPPED
    path = GRMPIQA.shipped_checkpoint()  # present, and its sha256 matches the pinned one
    ck = read_method_checkpoint(path, "grmp-iqa")
    # it records what it was trained on: 50 shots of the LIVE Challenge development part
    assert ck.config["protocol"]["shots"] == 50 and ck.config["data"]["labels"].endswith("livec-dev/labels.csv")
    metric = create_metric("grmp-iqa", device="cpu")
    assert metric.clip.weights_name == DEFAULT_BACKBONE and path.name in metric.model_id
    img = load_image(REPO / "examples" / "kodak-kodim23.png")
    score = float(metric(img[None])[0])
    with torch.no_grad():
        untrained = build_model({**ck.config["model"], "meta_init": None}, device="cpu").eval()
        zero_shot = float(untrained.predict([img])[0])
    assert 0 < score < 1 and abs(score - zero_shot) > 1e-4  # it did train


def test_metric_errors(tmp_path):
    with pytest.raises(ValueError, match="needs a trained checkpoint: none ships for backbone 'test-tiny'"):
        create_metric("grmp-iqa", model="test-tiny", device="cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        create_metric("grmp-iqa", checkpoint=tmp_path / "missing.safetensors", device="cpu")
    model = build_model(TINY, device=CPU)
    other = save_method_checkpoint(tmp_path / "dqa.safetensors", "clip-dqa", {"x": torch.zeros(1)}, {}, model.backbone)
    with pytest.raises(CheckpointError, match="for method 'clip-dqa', not 'grmp-iqa'"):
        create_metric("grmp-iqa", checkpoint=other, device="cpu")
    pl = model.checkpoint_payload({"model": TINY})
    ok = save_method_checkpoint(tmp_path / "ok.safetensors", pl["method"], pl["state"], pl["config"], pl["backbone"])
    with pytest.raises(ValueError, match="test_crops must be 1"):
        create_metric("grmp-iqa", checkpoint=ok, device="cpu", test_crops=3)
    with pytest.raises(ValueError, match="tune_blocks must be between 0 and 2"):
        build_model({**TINY, "tune_blocks": 4}, device=CPU)
    with pytest.raises(ValueError, match="unknown model setting"):
        build_model({**TINY, "vpt_lenght": 4}, device=CPU)


# ---------------------------------------------------------------------------------------------------------
# the method learns (test-tiny)


def _centre_crops(folder: Path, n: int, size: int = 244) -> torch.Tensor:
    out = []
    for p in sorted(list_images([folder]))[:n]:
        x = load_image(p)
        h, w = x.shape[-2:]
        out.append(x[:, (h - size) // 2 : (h - size) // 2 + size, (w - size) // 2 : (w - size) // 2 + size])
    return torch.stack(out)


def _pool(photos: torch.Tensor, name: str, levels: tuple[int, ...], tag: str) -> tuple[IQALabels, list[torch.Tensor]]:
    """Every photo at every level (0 = clean), in memory; score = 5 - level, grouped by photo."""
    samples, images = [], []
    for lv in levels:
        batch = apply(photos, name, lv, seed=lv) if lv else photos
        for i in range(len(photos)):
            samples.append(IQASample(path=Path(f"{tag}/{name}/{i:02d}_{lv}.png"), score=float(5 - lv),
                                     ref=Path(f"{tag}/{i:02d}.png"), distortion=name, level=lv))
            images.append(batch[i].contiguous())
    return IQALabels(samples, name=f"{tag}-{name}"), images


@pytest.fixture(scope="module")
def mcmaster_low_light(photos_dir):
    return _pool(_centre_crops(photos_dir / "mcmaster18", 18), "low_light", (1, 2, 3, 4, 5), "mcmaster")


def _photo_split(labels: IQALabels, seed: int, shots: int = 24) -> tuple[list[int], list[int]]:
    photos = sorted({s.ref for s in labels}, key=str)
    perm = np.random.default_rng(seed).permutation(len(photos))
    train_refs = {photos[i] for i in perm[:12]}  # 12 photos to draw shots from, 6 to validate on
    train = [i for i, s in enumerate(labels) if s.ref in train_refs]
    val = [i for i, s in enumerate(labels) if s.ref not in train_refs]
    return list(few_shot(train, shots, seed=seed)), val


def _finetune(pool, seed: int, steps: int, run_dir: Path, meta_init: Path | None = None) -> tuple[float, float]:
    """Validation SRCC before and after ``steps`` SGD steps of the tiny fine-tuning config (lambda 5)."""
    labels, images = pool
    cfg = load_config(TINY_FT, [f"train.steps={steps}", f"train.eval_every={steps}", "data.workers=1"],
                      defaults=gf.DEFAULTS)
    cfg["model"]["meta_init"] = str(meta_init) if meta_init else None
    train, val = _photo_split(labels, seed)
    seed_everything(seed)
    model = gf.build(cfg, CPU)
    task = IQATask(model, labels, train, val, cfg, seed, images=images.__getitem__)
    model.eval()
    before = task.evaluate()["srcc"]
    fit = Trainer(task, cfg, run_dir, CPU, resume=False, progress=False).fit()
    return before, fit["last_eval"]["srcc"]


STEPS, SEEDS = 10, (0, 1, 2)


@pytest.fixture(scope="module")
def fresh_runs(mcmaster_low_light, tmp_path_factory):
    """Fine-tuning from fresh prompts: (before, after) validation SRCC per seed."""
    tmp = tmp_path_factory.mktemp("fresh")
    return [_finetune(mcmaster_low_light, seed, STEPS, tmp / f"s{seed}") for seed in SEEDS]


def test_few_shot_finetuning_learns(fresh_runs):
    """24 shots, 10 SGD steps with the regulariser: validation SRCC on unseen photos rises clearly."""
    before, after = np.mean(fresh_runs, axis=0)
    assert after > 0.7 and after > before + 0.3, fresh_runs


def test_meta_init_fine_tunes_at_least_as_well(tmp_path, photos_dir, mcmaster_low_light, fresh_runs):
    """Reptile meta-prompts from exposure-family tasks on Kodak24 vs fresh prompts, same steps and seeds.

    The meta-prompts already rank McMaster18's low-light levels before fine-tuning (fresh prompts read the
    random backbone in a random direction), and after the same steps they are at least as good on average.
    """
    kodak = _centre_crops(photos_dir / "kodak24", 12)
    tasks = []
    for j, name in enumerate(("low_light", "contrast_change")):
        labels, images = _pool(kodak, name, (0, 1, 2, 3, 4, 5), "kodak")
        tasks.append(gp.LabelledTask(name, labels, list(range(len(labels))), images.__getitem__, 0.8, j, 40))
    cfg = load_config(TINY_PRE, ["train.epochs=0", "train.steps=6", "train.eval_every=6", "meta.inner_steps=3",
                                 "meta.inner_batch=16", "data.workers=1"], defaults=gp.DEFAULTS)
    seed_everything(0)
    reptile = gp.ReptileTask(gp.build(cfg, CPU), tasks, cfg, CPU)
    trainer = Trainer(reptile, cfg, tmp_path / "meta", CPU, resume=False, progress=False)
    trainer.fit()
    assert trainer.best > 0.2  # query parts: Kodak photos held out of the support parts
    best = read_method_checkpoint(trainer.best_path)
    meta = save_method_checkpoint(tmp_path / "meta_init.safetensors", best.method, best.state, best.config,
                                  best.backbone)
    metas = [_finetune(mcmaster_low_light, s, STEPS, tmp_path / f"m{s}", meta) for s in SEEDS]
    (fresh_before, fresh_after), (meta_before, meta_after) = np.mean(fresh_runs, axis=0), np.mean(metas, axis=0)
    assert meta_before > fresh_before + 0.3, (fresh_runs, metas)
    assert meta_after >= fresh_after, (fresh_runs, metas)


# ---------------------------------------------------------------------------------------------------------
# the two commands


def _write_csv(path: Path, labels: IQALabels, images: list[torch.Tensor], every: int = 1) -> Path:
    rows = []
    for i, (s, img) in enumerate(zip(labels, images)):
        if i % every:
            continue
        name = f"{s.ref.stem}_{s.distortion}_{s.level}.png"
        save_image(img, path.parent / name)
        rows.append({"image": name, "mos": s.score, "scene": s.ref.stem, "distortion": s.distortion,
                     "level": s.level})
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_pretrain_and_finetune_commands(tmp_path, photos_dir, mcmaster_low_light, capsys):
    """grmp-pretrain (on-the-fly synthetic tasks) -> meta_init -> grmp-finetune --meta-init --shots -> metric."""
    pre_dir = tmp_path / "pre"
    assert cli(["train", "grmp-pretrain", "--config", str(TINY_PRE), "--run-dir", str(pre_dir),
                f"data.photos={photos_dir}"]) == 0
    meta = pre_dir / "meta_init.safetensors"
    ck = read_method_checkpoint(meta, "grmp-iqa")
    assert ck.config["stage"] == "pretrain" and set(ck.state) == {"text_prompts.ctx", "vision_prompts.tokens",
                                                                   "vision_prompts.proj.weight",
                                                                   "vision_prompts.proj.bias"}
    # Resumable and reproducible: stopped after one outer step and resumed, it ends where the straight run did.
    cfg = load_config(TINY_PRE, [f"data.photos={photos_dir}"], defaults=gp.DEFAULTS)
    seed_everything(0)
    model = gp.build(cfg, CPU)
    task = gp.ReptileTask(model, gp.build_tasks(cfg, model.train_resize), cfg, CPU)
    cfg["train"]["steps"], cfg["train"]["eval_every"] = 2, 1
    half = Trainer(task, cfg, tmp_path / "half", CPU, progress=False)
    half.tcfg["steps"] = 1
    half.fit()
    gp.run(cfg, tmp_path / "half", CPU, progress=False)
    resumed = read_method_checkpoint(tmp_path / "half" / "last.safetensors").state
    straight = read_method_checkpoint(pre_dir / "last.safetensors").state
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], msg=f"{k} differs after resume")

    labels, images = mcmaster_low_light
    data = tmp_path / "data"
    data.mkdir()
    csv_file = _write_csv(data / "labels.csv", labels, images, every=2)
    capsys.readouterr()
    assert cli(["train", "grmp-finetune", "--config", str(TINY_FT), "--run-dir", str(tmp_path / "ft"),
                "--shots", "12", "--meta-init", str(meta), "data.source=labels", f"data.labels={csv_file}",
                "data.format=csv", "protocol.group=scene", "train.steps=4", "train.eval_every=2"]) == 0
    rounds = (tmp_path / "ft" / "rounds.csv").read_text().splitlines()
    assert len(rounds) == 2 and rounds[1].startswith("0,0,12,")  # one round (seed 0) with 12 shots
    ft_ck = tmp_path / "ft" / "round00" / "checkpoint.safetensors"
    assert read_method_checkpoint(ft_ck).config["model"]["meta_init"] == str(meta)
    scores = create_metric("grmp-iqa", checkpoint=ft_ck, device="cpu")([images[0], images[-1]])
    assert scores.shape == (2,) and torch.isfinite(scores).all()

    assert cli(["train", "degradation-clip", "--shots", "5"]) == 2
    assert "--shots: task degradation-clip has no protocol.shots setting" in capsys.readouterr().err
    assert cli(["train", "grmp-finetune", "--config", str(TINY_FT), "--meta-init", str(tmp_path / "nope")]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err


def test_labelled_meta_tasks(tmp_path, mcmaster_low_light):
    """Tasks from a label file with distortion types: one per type, support and query disjoint by content."""
    labels, images = mcmaster_low_light
    data = tmp_path / "data"
    data.mkdir()
    csv_file = _write_csv(data / "labels.csv", labels, images, every=3)
    cfg = load_config(TINY_PRE, ["data.source=labels", "meta.eval_max_per_task=0"], defaults=gp.DEFAULTS)
    cfg["data"]["datasets"] = [{"labels": str(csv_file), "format": "csv"}]
    tasks = gp.build_tasks(cfg, 244)
    assert [t.name for t in tasks] == ["custom:low_light"]
    task = tasks[0]
    support_refs = {task.labels[i].scene for i, _ in task.support}
    assert support_refs and not support_refs & {task.labels[i].scene for i, _ in task._query}
    imgs, targets = task.query()
    assert len(imgs) == len(targets) and targets.min() >= 0 and targets.max() <= 1
    everything = [t for _, t in task.support + task._query]
    assert math.isclose(min(everything), 0) and math.isclose(max(everything), 1)
    cfg["data"]["datasets"] = [{"format": "csv"}]
    with pytest.raises(ValueError, match="'labels' file"):
        gp.build_tasks(cfg, 244)


def test_stem_statistics_reach_the_class_token_and_older_checkpoints_load_without(tmp_path):
    """On a hybrid backbone with stage statistics (degradation-clip-v2) the prompted tower gets them as its
    own forward does; a checkpoint from before the setting existed was trained without them and loads so."""
    model = build_model({"backbone": "degradation-clip-v2", "vpt_length": 2, "tune_blocks": 1}, device=CPU).eval()
    x = model._normalize(torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        tokens, stats = model.clip.visual.embed_images(x)
        assert stats is not None and stats.abs().sum() > 0
        manual = model.clip.visual.forward_tokens(tokens, deep_prompts=model.vision_prompts(),
                                                  pre_ln_post=model.prompt_norm, cls_extra=stats).pooled
        torch.testing.assert_close(model.image_features(x), manual)
        model.stem_stats = False
        assert not torch.allclose(model.image_features(x), manual)
        model.stem_stats = True
    pl = model.checkpoint_payload({"model": {"backbone": "degradation-clip-v2", "vpt_length": 2, "tune_blocks": 1}})
    assert pl["config"]["model"]["stem_stats"] is True
    new = save_method_checkpoint(tmp_path / "new.safetensors", pl["method"], pl["state"], pl["config"],
                                 pl["backbone"])
    old_cfg = {**pl["config"], "model": {k: v for k, v in pl["config"]["model"].items() if k != "stem_stats"}}
    old = save_method_checkpoint(tmp_path / "old.safetensors", pl["method"], pl["state"], old_cfg, pl["backbone"])
    assert create_metric("grmp-iqa", checkpoint=new, device="cpu").net.stem_stats is True
    assert create_metric("grmp-iqa", checkpoint=old, device="cpu").net.stem_stats is False
