"""FGSM / I-FGSM in pixel space: what they guarantee, that they never touch the shared model,
and that bad input is refused clearly."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ltpa.attacks import (
    APP_MAX_EPSILON,
    attack,
    attack_direction,
    check_epsilon,
    fgsm,
    doubling_levels,
    fgsm_levels_logits,
    iterative_fgsm,
    iterative_fgsm_levels,
    levels_logits,
    smallest_flipping_epsilon,
    sweep_levels,
)
from ltpa.preprocess import CIFAR10_CLASSES
from ltpa.zoo import DEFAULT_ZOO_DIR, load_zoo_model

REPO = Path(__file__).resolve().parents[1]
# The tiny zoo's ResNet is input-sensitive even untrained (its predictions flip under attack).
TINY_ID = "resnet_att2_concat_pc"



def example_images(count: int = 6) -> torch.Tensor:
    """CIFAR-10 example images shipped with the app when present, else smooth random images;
    one pixel of each image is set to 0 and one to 1 so clamping at both ends is exercised."""
    paths = example_paths(count)
    if len(paths) == count:
        arrays = [np.asarray(Image.open(p).convert("RGB").resize((32, 32)), dtype=np.uint8) for p in paths]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    else:
        noise = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        x = F.interpolate(noise, size=32, mode="bilinear", align_corners=False)
    x = x.clone()
    x[:, :, 0, 0] = 0.0
    x[:, :, -1, -1] = 1.0
    return x


def example_paths(count: int) -> list[Path]:
    """Shipped CIFAR-10 test examples, named cifar_<class>_NNNN.jpg, spread over the classes."""
    return sorted((REPO / "assets" / "examples").glob("cifar_*_0000.jpg"))[:count]


def example_labels(count: int = 6) -> torch.Tensor | None:
    """The true classes of ``example_images`` (None for the random fallback)."""
    paths = example_paths(count)
    if len(paths) != count:
        return None
    return torch.tensor([CIFAR10_CLASSES.index(p.name.split("_")[1]) for p in paths])


def shipped_model_id() -> str | None:
    """The first attention model of the real zoo, if it has landed."""
    manifest = DEFAULT_ZOO_DIR / "manifest.json"
    if not manifest.is_file():
        return None
    models = json.loads(manifest.read_text()).get("models", [])
    with_maps = [m["id"] for m in models if m.get("stages")]
    return (with_maps or [m["id"] for m in models] or [None])[0]


@pytest.fixture()
def model(tiny_zoo):
    return load_zoo_model(TINY_ID).model


@pytest.fixture()
def shipped_or_tiny(tiny_zoo, monkeypatch):
    """A shipped model when the real zoo exists (issue 6 asks for one), else the tiny ResNet."""
    model_id = shipped_model_id()
    if model_id is None:
        return load_zoo_model(TINY_ID).model
    monkeypatch.setenv("LTPA_ZOO", str(DEFAULT_ZOO_DIR))
    return load_zoo_model(model_id).model


def predict(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).logits.argmax(dim=1)


def loss_per_image(model, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.cross_entropy(model(x).logits.float(), classes, reduction="none")


# ------------------------------------------------------------------------------- guarantees
def test_fgsm_raises_the_loss_of_the_attacked_class(shipped_or_tiny):
    x = example_images()
    labels = example_labels()
    for label in ([labels] if labels is not None else []) + [None]:  # true class, then predicted
        attacked = label if label is not None else predict(shipped_or_tiny, x)
        clean_loss = loss_per_image(shipped_or_tiny, x, attacked)
        # In the linear regime (1/255) every image's loss rises; at 4/255 they rise on average
        # (a single step may overshoot on one image: FGSM is first-order).
        small = fgsm(shipped_or_tiny, x, 1 / 255, label=label)
        assert torch.all(loss_per_image(shipped_or_tiny, small, attacked) > clean_loss)
        larger = fgsm(shipped_or_tiny, x, 4 / 255, label=label)
        assert loss_per_image(shipped_or_tiny, larger, attacked).mean() > clean_loss.mean()


@pytest.mark.parametrize("levels", [1, 4, 32])
def test_perturbation_is_within_epsilon_and_pixels_stay_in_range(model, levels):
    x = example_images()
    epsilon = levels / 255
    generator = torch.Generator().manual_seed(0)
    results = {
        "fgsm": fgsm(model, x, epsilon),
        "targeted": fgsm(model, x, epsilon, target=3),
        "ifgsm": iterative_fgsm(model, x, epsilon, steps=3),
        "pgd": iterative_fgsm(model, x, epsilon, steps=3, random_start=True, generator=generator),
    }
    for name, adversarial in results.items():
        assert adversarial.shape == x.shape, name
        assert float((adversarial - x).abs().max()) <= epsilon + 1e-6, name
        assert float(adversarial.min()) >= 0.0 and float(adversarial.max()) <= 1.0, name
        assert not torch.equal(adversarial, x), name
    # FGSM moves every pixel by exactly epsilon unless clamped or its gradient is exactly zero.
    moved = (results["fgsm"] - x).abs()
    interior = (x - epsilon >= 0) & (x + epsilon <= 1)
    assert float((moved[interior] - epsilon).abs().max()) < 1e-6 or levels == 32


@pytest.mark.parametrize("method", ["fgsm", "ifgsm"])
def test_epsilon_zero_returns_the_input_and_the_clean_prediction(model, method):
    x = example_images()
    adversarial = attack(model, x, 0.0, method)
    assert torch.equal(adversarial, x)
    assert adversarial.data_ptr() != x.data_ptr()  # a copy: callers may edit it
    assert torch.equal(predict(model, adversarial), predict(model, x))


def test_the_model_is_never_touched(model):
    x = example_images()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fgsm(model, x, 8 / 255)
    iterative_fgsm(model, x, 8 / 255, steps=2, target=1)
    smallest_flipping_epsilon(model, x[:1], max_levels=4)
    smallest_flipping_epsilon(model, x[:1], method="ifgsm", max_levels=4, steps=2)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included


def test_works_under_no_grad_with_the_same_result(model):
    x = example_images()
    expected = fgsm(model, x, 4 / 255)
    with torch.no_grad():
        under_no_grad = fgsm(model, x, 4 / 255)
        iterative = iterative_fgsm(model, x, 4 / 255, steps=2)
    assert torch.equal(under_no_grad, expected)
    assert not torch.equal(iterative, x)
    assert not under_no_grad.requires_grad and not iterative.requires_grad


def test_inference_mode_is_refused_with_a_clear_message(model):
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        fgsm(model, example_images(), 4 / 255)


def test_two_threads_get_what_they_get_one_after_another(model):
    x = example_images()
    first, second = x[:3].contiguous(), x[3:].contiguous()
    expected_a = fgsm(model, first, 8 / 255)
    expected_b = iterative_fgsm(model, second, 6 / 255, steps=3, label=2)
    for _ in range(3):
        results: dict[str, torch.Tensor] = {}
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def run(name, fn):
            try:
                barrier.wait()
                results[name] = fn()
            except BaseException as error:  # reported below, not lost in the thread
                errors.append(error)

        threads = [
            threading.Thread(target=run, args=("a", lambda: fgsm(model, first, 8 / 255))),
            threading.Thread(target=run, args=("b", lambda: iterative_fgsm(model, second, 6 / 255, steps=3, label=2))),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert torch.equal(results["a"], expected_a)
        assert torch.equal(results["b"], expected_b)


def test_targeted_fgsm_lowers_the_target_loss(model):
    x = example_images()
    with torch.no_grad():
        target = model(x).logits.argmin(dim=1)  # the least likely class of each image
    adversarial = fgsm(model, x, 4 / 255, target=target)
    assert torch.all(loss_per_image(model, adversarial, target) < loss_per_image(model, x, target))
    # Pushing towards a class is the opposite direction of pushing away from it.
    towards, _, _ = attack_direction(model, x, target=target)
    away, _, _ = attack_direction(model, x, label=target)
    assert torch.equal(towards, -away)


def test_fgsm_levels_logits_match_single_attacks(model):
    x = example_images()[:1]
    levels = [0, 1, 5, 12]
    logits = fgsm_levels_logits(model, x, levels)
    for row, k in zip(logits, levels):
        with torch.no_grad():
            single = model(fgsm(model, x, k / 255)).logits[0]
        assert torch.allclose(row, single, atol=1e-4)


# ------------------------------------------------------------------------------- smallest flip
def test_smallest_flipping_epsilon_fgsm_is_exact(model):
    found = 0
    for image in example_images()[:3]:
        image = image[None]
        clean = int(predict(model, image))
        k = smallest_flipping_epsilon(model, image, "fgsm", max_levels=32)
        # Every epsilon up to the maximum (None) or below k fails; fgsm_levels_logits is checked
        # against single fgsm calls above.
        below = fgsm_levels_logits(model, image, range(0, 33 if k is None else k)).argmax(dim=1)
        assert torch.all(below == clean)
        if k is not None:
            found += 1
            assert int(predict(model, fgsm(model, image, k / 255))) != clean
            assert int(predict(model, fgsm(model, image, (k - 1) / 255))) == clean
    assert found > 0, "the attack should flip at least one example image"


def test_smallest_flipping_epsilon_ifgsm_flips_at_k_and_not_below(model):
    images = example_images()[:3]
    # The image FGSM flips most easily, so the iterative search surely finds an answer.
    flips = [smallest_flipping_epsilon(model, image[None], max_levels=16) or 99 for image in images]
    image = images[int(np.argmin(flips))][None]
    clean = int(predict(model, image))
    k = smallest_flipping_epsilon(model, image, "ifgsm", max_levels=32, steps=3)
    assert k is not None
    assert int(predict(model, iterative_fgsm(model, image, k / 255, steps=3))) != clean
    assert k == 1 or int(predict(model, iterative_fgsm(model, image, (k - 1) / 255, steps=3))) == clean


def test_smallest_flipping_epsilon_targeted(model):
    image = example_images()[:1]
    clean = int(predict(model, image))
    assert smallest_flipping_epsilon(model, image, target=clean) == 0  # already there
    target = (clean + 1) % 10
    k = smallest_flipping_epsilon(model, image, target=target, max_levels=32)
    if k is not None:
        assert int(predict(model, fgsm(model, image, k / 255, target=target))) == target
        assert int(predict(model, fgsm(model, image, (k - 1) / 255, target=target))) != target


# ------------------------------------------------------------------------------- batched epsilons
class CountingModel(torch.nn.Module):
    """Wraps a PixelModel and records the batch size of every forward (for "one batch, not a
    loop")."""

    def __init__(self, model) -> None:
        super().__init__()
        self.inner = model
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(int(x.shape[0]))
        return self.inner(x)


def counted(model) -> CountingModel:
    from ltpa.preprocess import PixelModel

    wrapper = CountingModel(model).eval()
    wrapper.__class__ = type("CountingPixelModel", (CountingModel, PixelModel), {})  # passes check_model
    return wrapper


@pytest.mark.parametrize("model_id", [TINY_ID, "vgg_att3_concat_pc"])
@pytest.mark.parametrize("target", [None, 3])
def test_ifgsm_levels_equal_the_loop_of_single_attacks(tiny_zoo, model_id, target):
    model = load_zoo_model(model_id).model
    x = example_images()[:1]
    levels = [0, 1, 3, 8, 32]
    batched = iterative_fgsm_levels(model, x, levels, steps=4, target=target)
    assert batched.shape == (len(levels), 3, 32, 32)
    for row, k in zip(batched, levels):
        single = iterative_fgsm(model, x, k / 255, steps=4, target=target)[0]
        assert float((row - x[0]).abs().max()) <= k / 255 + 1e-6
        # Equal up to the rounding of a batched convolution (a sign that flips at a near-zero
        # gradient component moves one pixel by one step): nearly every pixel is bit-equal.
        differing = (row - single).abs() > 1e-6
        assert float(differing.float().mean()) < 0.02, (model_id, k)
    with torch.no_grad():
        loop = torch.stack([model(iterative_fgsm(model, x, k / 255, steps=4, target=target)).logits[0]
                            for k in levels]).argmax(dim=1)
    assert torch.equal(levels_logits(model, x, levels, "ifgsm", target=target, steps=4).argmax(dim=1), loop)


def test_ifgsm_levels_run_as_one_batch_per_step(model):
    counting = counted(model)
    x = example_images()[:1]
    iterative_fgsm_levels(counting, x, [0, 2, 4, 8], steps=3)
    # One call for the clean prediction, then one batch of the three non-zero levels per step.
    assert counting.batches == [1, 3, 3, 3]


def test_sweep_fgsm_is_the_loop_over_every_level(model):
    for image in example_images()[:3]:
        image = image[None]
        sweep = sweep_levels(model, image, "fgsm", max_levels=32)
        assert sweep.levels == tuple(range(33))
        clean = int(predict(model, image))
        assert sweep.clean_prediction == clean == sweep.attacked_class and not sweep.targeted
        loop = torch.stack([torch.softmax(model(fgsm(model, image, k / 255)).logits[0].detach(), dim=0)
                            for k in range(33)])
        assert torch.allclose(sweep.probabilities, loop, atol=1e-5)
        flipped = [k for k in range(1, 33) if int(loop[k].argmax()) != clean]
        assert sweep.smallest == (flipped[0] if flipped else None)
        assert smallest_flipping_epsilon(model, image, "fgsm") == sweep.smallest


def test_sweep_ifgsm_curve_and_smallest_in_batched_passes(model):
    images = example_images()[:3]
    flips = [smallest_flipping_epsilon(model, image[None], max_levels=16) or 99 for image in images]
    image = images[int(np.argmin(flips))][None]
    counting = counted(model)
    shares: list[float] = []
    sweep = sweep_levels(counting, image, "ifgsm", max_levels=32, steps=3, progress=shares.append)
    assert set(doubling_levels(32)) | {0} <= set(sweep.levels)
    assert list(sweep.levels) == sorted(sweep.levels)
    k = sweep.smallest
    assert k is not None and k in sweep.levels
    clean = sweep.clean_prediction
    assert int(predict(model, iterative_fgsm(model, image, k / 255, steps=3))) != clean
    assert k == 1 or int(predict(model, iterative_fgsm(model, image, (k - 1) / 255, steps=3))) == clean
    # The curve's points are those of single attacks (same prediction at every level).
    for level, prediction in zip(sweep.levels, sweep.predictions):
        assert int(predict(model, iterative_fgsm(model, image, level / 255, steps=3))) == int(prediction)
    # Batched: the first pass attacks 1, 2, 4, 8, 16, 32 together (then one forward with 0).
    assert counting.batches[:5] == [1, 6, 6, 6, 7]
    assert shares == sorted(shares) and shares[-1] == 1.0


class LinearScore(torch.nn.Module):
    """Two classes scored ``(<w, x> - bias) / 64`` and 0, with w = +-1 per input value: an L-inf attack
    of epsilon lowers the first score by exactly ``epsilon * 3072``, so the flip is known."""

    def __init__(self, flips_above_levels: float) -> None:
        super().__init__()
        signs = torch.where(torch.arange(3 * 32 * 32) % 3 == 0, 1.0, -1.0).view(1, 3, 32, 32)
        self.register_buffer("w", signs)
        # At x = 0.5 everywhere the first score is flips_above_levels / 255 * 3072.
        self.bias = float((signs * 0.5).sum()) - flips_above_levels / 255 * signs.numel()

    def forward(self, x):
        from ltpa.models.outputs import ModelOutput

        first = ((self.w * x).flatten(1).sum(dim=1) - self.bias) / 64  # not saturated: a gradient
        logits = torch.stack([first, torch.zeros_like(first)], dim=1)
        return ModelOutput(logits, (), (), (), x)


def test_ifgsm_search_narrows_a_wide_bracket_in_batches():
    from ltpa.preprocess import PixelModel

    model = counted(PixelModel(LinearScore(10.5), [0.0] * 3, [1.0] * 3).eval())
    x = torch.full((1, 3, 32, 32), 0.5)
    sweep = sweep_levels(model, x, "ifgsm", max_levels=32, steps=10)
    assert sweep.clean_prediction == 0 and sweep.smallest == 11
    # 1, 2, 4, 8, 16, 32 brackets (8, 16]; 10, 12, 14 narrow it to (10, 12]; then 11.
    assert sweep.levels == (0, 1, 2, 4, 8, 10, 11, 12, 14, 16, 32)
    assert model.batches == [1] + [6] * 10 + [7] + [3] * 10 + [3] + [1] * 10 + [1]
    assert [int(p) for p in sweep.predictions] == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_a_progress_callback_can_stop_a_sweep(model):
    class Enough(Exception):
        pass

    def stop(share: float) -> None:
        raise Enough

    with pytest.raises(Enough):
        sweep_levels(model, example_images()[:1], "ifgsm", steps=3, progress=stop)


def test_sweep_targeted_reaching_the_target(model):
    image = example_images()[:1]
    clean = int(predict(model, image))
    assert sweep_levels(model, image, "ifgsm", target=clean, steps=2).smallest == 0
    target = (clean + 1) % 10
    sweep = sweep_levels(model, image, "fgsm", target=target)
    assert sweep.targeted and sweep.attacked_class == target
    reached = [k for k, p in zip(sweep.levels, sweep.predictions) if k > 0 and int(p) == target]
    assert sweep.smallest == (reached[0] if reached else None)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("epsilon", [-1 / 255, 1.5, float("nan"), float("inf"), "big", None, True])
def test_bad_epsilon_is_refused(model, epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        fgsm(model, example_images(), epsilon)


def test_app_range_of_epsilon():
    assert check_epsilon(32 / 255, APP_MAX_EPSILON) == pytest.approx(32 / 255)
    assert check_epsilon(32 * (1 / 255), APP_MAX_EPSILON) == pytest.approx(32 / 255)
    with pytest.raises(ValueError, match=r"0 to 32/255"):
        check_epsilon(33 / 255, APP_MAX_EPSILON)
    assert check_epsilon(1.0) == 1.0


def test_bad_classes_are_refused(model):
    x = example_images()
    with pytest.raises(ValueError, match="target class 10 does not exist.*10 classes"):
        fgsm(model, x, 4 / 255, target=10)
    with pytest.raises(ValueError, match="class -1 does not exist"):
        fgsm(model, x, 4 / 255, label=-1)
    with pytest.raises(ValueError, match="one class per image"):
        fgsm(model, x, 4 / 255, label=[1, 2])
    with pytest.raises(ValueError, match="not both"):
        fgsm(model, x, 4 / 255, label=1, target=2)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(3, 32, 32), "batch of images"),
    (torch.rand(1, 1, 32, 32), "3 colour channels"),
    (torch.rand(1, 3, 16, 16), "at least 32x32"),
    ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), "float pixels"),
    (torch.rand(1, 3, 32, 32) * 2 - 0.5, r"in \[0, 1\]"),
])
def test_images_the_model_cannot_take_are_refused(model, bad, message):
    with pytest.raises(ValueError, match=message):
        fgsm(model, bad, 4 / 255)
    with pytest.raises(ValueError, match=message):
        fgsm(model, bad, 0.0)


def test_a_model_in_training_mode_is_refused_not_switched(tiny_zoo):
    model = load_zoo_model(TINY_ID).model.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        fgsm(model, example_images(), 4 / 255)
    assert model.training
    with pytest.raises(TypeError, match="PixelModel"):
        fgsm(model.model.eval(), example_images(), 4 / 255)


def test_bad_attack_settings_are_refused(model):
    x = example_images()[:1]
    with pytest.raises(ValueError, match="steps"):
        iterative_fgsm(model, x, 4 / 255, steps=0)
    with pytest.raises(ValueError, match="step_size"):
        iterative_fgsm(model, x, 4 / 255, step_size=-1.0)
    with pytest.raises(ValueError, match="unknown attack"):
        attack(model, x, 4 / 255, "deepfool")
    with pytest.raises(ValueError, match="max_levels"):
        smallest_flipping_epsilon(model, x, max_levels=0)
    with pytest.raises(ValueError, match="one image"):
        smallest_flipping_epsilon(model, example_images()[:2])
    with pytest.raises(ValueError, match="one image"):
        iterative_fgsm_levels(model, example_images()[:2], [1, 2])
    with pytest.raises(ValueError, match="whole grey levels"):
        iterative_fgsm_levels(model, x, [1.5])
    with pytest.raises(ValueError, match="epsilon"):
        levels_logits(model, x, [300], "ifgsm")
    with pytest.raises(ValueError, match="unknown attack"):
        sweep_levels(model, x, "deepfool")
