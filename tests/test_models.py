"""The pure nn.Modules: sensor pixels, shapes, gradient routing, cost counts."""

import pytest
import torch

from glimpse.checks import ConfigError
from glimpse.losses import objective
from glimpse.models import Retina, build
from glimpse.models.soft import location_grid


def test_retina_reads_exact_pixels_inside_the_image():
    image = torch.arange(100.0).view(1, 1, 10, 10)
    retina = Retina(10, patch=4, scales=2, scale_factor=2)
    # centre at pixel (4, 4): the 4x4 patch covers rows/cols 2..5, the 8x8 one rows/cols 0..7
    loc = torch.tensor([[[4 * 2 / 10 - 1, 4 * 2 / 10 - 1]]])
    patches = retina(retina.pyramid(image), loc)  # (1, 1, 2, 1, 4, 4)
    assert patches.shape == (1, 1, 2, 1, 4, 4)
    torch.testing.assert_close(patches[0, 0, 0, 0], image[0, 0, 2:6, 2:6])
    blocks = image[0, 0, :8, :8].reshape(4, 2, 4, 2).mean((1, 3))  # 2x2 block means
    torch.testing.assert_close(patches[0, 0, 1, 0], blocks)


def test_retina_reads_zeros_across_the_border():
    image = torch.arange(1.0, 101.0).view(1, 1, 10, 10)
    retina = Retina(10, patch=4)
    # centre at pixel (0, 9): x columns -2..1, y rows 7..10
    loc = torch.tensor([[[-1.0, 9 * 2 / 10 - 1]]])
    patch = retina(retina.pyramid(image), loc)[0, 0, 0, 0]
    expected = torch.zeros(4, 4)
    expected[:3, 2:] = image[0, 0, 7:10, 0:2]
    torch.testing.assert_close(patch, expected)


def test_retina_locations_are_x_then_y():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 2:6, 20:24] = 1.0  # a block near the top right
    retina = Retina(28, patch=4)
    right_top = torch.tensor([[[22 * 2 / 28 - 1, 4 * 2 / 28 - 1]]])
    left_bottom = torch.tensor([[[4 * 2 / 28 - 1, 22 * 2 / 28 - 1]]])
    levels = retina.pyramid(image)
    assert retina(levels, right_top).sum() == pytest.approx(16.0)
    assert retina(levels, left_bottom).sum() == 0.0


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_rollout_shapes(kind):
    model = build(kind, 60, glimpses=5, patch=12, scales=3, grid_stride=8) if kind == "soft" else \
        build(kind, 60, glimpses=5, patch=12, scales=3)
    out = model(torch.rand(3, 1, 60, 60))
    assert out.logits.shape == (3, 10)
    assert out.locations.shape == (3, 5, 2)
    assert out.locations.abs().max() <= 1
    if kind == "hard":
        assert out.log_probs.shape == out.baselines.shape == (3, 4)
        assert out.means.shape == (3, 4, 2)
        assert model(torch.rand(3, 1, 60, 60), keep_patches=True).patches.shape == (3, 5, 3, 1, 12, 12)
    else:
        n = (60 - 12) // 8 + 1
        assert out.weights.shape == (3, 5, n, n)
        torch.testing.assert_close(out.weights.sum((2, 3)), torch.ones(3, 5))


@pytest.mark.parametrize("kind, extra", [("hard", {}), ("hard", {"scales": 2, "start": "random"}), ("soft", {}),
                                         ("choice", {}), ("choice", {"estimator": "gumbel"})])
def test_samples_equal_repeated_images_and_share_the_grid_features(kind, extra):
    """``samples=M`` is the image repeated M times, draw for draw; the grid kinds read each image's
    grid once instead of M times (what makes M-sample evaluation of choice cheap), and hard builds
    each image's pyramid once."""
    net = build(kind, 28, glimpses=3, **extra)
    images = torch.rand(4, 1, 28, 28)
    rows = []
    if kind == "hard":
        net.glimpse.register_forward_hook(lambda module, args, out: rows.append(out.shape[:-1].numel()))
        pyramid, built = net.retina.pyramid, []
        net.retina.pyramid = lambda images: built.append(images.shape[0]) or pyramid(images)
    else:  # the grid's features, in whichever form they are computed
        features = net.features
        net.features = lambda images: rows.append(images.shape[0] * net.grid.shape[0]) or features(images)
    torch.manual_seed(1)
    shared = net(images, samples=3)
    read_shared, rows[:] = sum(rows), []
    torch.manual_seed(1)
    repeated = net(images.repeat(3, 1, 1, 1))
    torch.testing.assert_close(shared.logits, repeated.logits)
    torch.testing.assert_close(shared.locations, repeated.locations)
    assert shared.logits.shape == (12, 10)
    if kind == "hard":  # one glimpse per rollout and step, but one pyramid per image
        assert read_shared == sum(rows) == 12 * 3
        assert built == [4, 12]
    else:
        locations = net.grid.shape[0]
        assert (read_shared, sum(rows)) == (4 * locations, 12 * locations)


@pytest.mark.parametrize("kind, extra", [("hard", {}), ("hard", {"policy_hidden": 8, "start": "random"}),
                                         ("choice", {}), ("soft", {})])
def test_prediction_draws_the_scored_paths_without_what_only_the_loss_reads(kind, extra):
    """``scored=False`` (what predict_proba asks for) gives the same paths and logits as the full
    rollout, draw for draw, and skips the log-probabilities and baselines: fewer calls of the
    baseline, and none of the policy's scoring."""
    net = build(kind, 28, glimpses=3, **extra)
    images = torch.rand(4, 1, 28, 28)
    calls = []
    if hasattr(net, "baseline") and net.baseline is not None:
        net.baseline.register_forward_hook(lambda *args: calls.append(1))
    outs = {}
    for scored in (True, False):
        torch.manual_seed(2)
        outs[scored] = net(images, samples=2, scored=scored)
        calls.append(scored)
    torch.testing.assert_close(outs[False].logits, outs[True].logits)
    torch.testing.assert_close(outs[False].locations, outs[True].locations)
    assert outs[False].log_probs is None and outs[False].baselines is None
    if kind != "soft":  # soft has neither; choice (reinforce) and hard score every sampled step
        assert outs[True].log_probs.shape[1] == 2 + (kind == "choice")
        assert calls == [1] * outs[True].log_probs.shape[1] + [True, False]


def grads_of(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {name: p.grad is not None and p.grad.abs().sum().item() > 0 for name, p in model.named_parameters()}


def hard_losses(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = build("hard", 28, glimpses=4, patch=8, std=0.2, **kwargs)
    images, labels = torch.rand(16, 1, 28, 28), torch.randint(10, (16,))
    out = model(images)
    loss, parts = objective(out, labels)
    reward = (out.logits.argmax(-1) == labels).float()
    # The three terms, rebuilt from the rollout so each can be back-propagated on its own.
    ce = torch.nn.functional.cross_entropy(out.logits, labels)
    policy = -(out.log_probs * (reward[:, None] - out.baselines.detach())).sum(1).mean()
    baseline = torch.nn.functional.mse_loss(out.baselines, reward[:, None].expand_as(out.baselines))
    torch.testing.assert_close(ce + policy + baseline, loss)
    return model, ce, policy, baseline, loss


def test_classification_loss_does_not_reach_policy_or_baseline():
    model, ce, *_ = hard_losses()
    got = grads_of(model, ce)
    assert not any(v for k, v in got.items() if k.startswith(("policy.", "baseline.")))
    assert all(v for k, v in got.items() if k.startswith(("glimpse.", "core.", "classifier.")))


def test_reinforce_reaches_the_location_network_only():
    model, _, policy, *_ = hard_losses()
    got = grads_of(model, policy)
    assert {k for k, v in got.items() if v} == {"policy.mean.weight", "policy.mean.bias"}


def test_baseline_loss_reaches_the_baseline_only():
    model, _, _, baseline, _ = hard_losses()
    got = grads_of(model, baseline)
    assert {k for k, v in got.items() if v} == {"baseline.value.weight", "baseline.value.bias"}


def test_full_hard_loss_reaches_every_parameter():
    model, *_, loss = hard_losses()
    got = grads_of(model, loss)
    assert all(got.values()), [k for k, v in got.items() if not v]


def test_soft_gradients_reach_every_parameter_through_the_weights():
    torch.manual_seed(0)
    model = build("soft", 28, glimpses=3, patch=8, grid_stride=4)
    loss, parts = objective(model(torch.rand(8, 1, 28, 28)), torch.randint(10, (8,)))
    assert set(parts) == {"ce", "loss", "attention_entropy"}  # no REINFORCE anywhere
    got = grads_of(model, loss)
    assert all(got.values()), [k for k, v in got.items() if not v]


def test_policy_samples_around_the_mean_with_its_std():
    torch.manual_seed(0)
    model = build("hard", 28, glimpses=2, std=0.05)
    out = model(torch.zeros(4000, 1, 28, 28))  # same image: same mean for every row
    spread = (out.locations[:, 1] - out.means[:, 0]).std(0)
    torch.testing.assert_close(spread, torch.full((2,), 0.05), atol=0.003, rtol=0)
    greedy = model(torch.zeros(4, 1, 28, 28), greedy=True)
    torch.testing.assert_close(greedy.locations[:, 1], greedy.means[:, 0].clamp(-1, 1))


def test_normalised_policy_ignores_the_scale_of_the_state():
    """A growing rectified-RNN state must not move the normalised policy's mean; it moves the plain one."""
    from glimpse.models.parts import GaussianPolicy
    torch.manual_seed(0)
    h = torch.rand(16, 32)
    plain, normed = GaussianPolicy(32, 0.1), GaussianPolicy(32, 0.1, normalize=True)
    start = normed(h, greedy=True)[2]  # at first the state is ignored: the same look for every image
    torch.testing.assert_close(start, start[:1].expand(16, 2))
    normed.load_state_dict(plain.state_dict())
    torch.testing.assert_close(normed(h, greedy=True)[2], normed(10 * h, greedy=True)[2], atol=1e-3, rtol=0)
    assert (plain(h, greedy=True)[2] - plain(10 * h, greedy=True)[2]).abs().max() > 0.1
    model, _, policy, *_ = hard_losses(policy_norm=True)  # still the location network only
    assert {k for k, v in grads_of(model, policy).items() if v} == {"policy.mean.weight", "policy.mean.bias"}


def test_policy_hidden_layer_is_trained_by_reinforce_only_and_counted():
    """policy_hidden: the mean reads a hidden ReLU layer; REINFORCE reaches that layer and the mean only,
    cross-entropy never does; its multiply-adds are in the cost."""
    model, ce, policy, *_ = hard_losses(policy_hidden=32)
    assert {k for k, v in grads_of(model, policy).items() if v} == {
        "policy.hidden.0.weight", "policy.hidden.0.bias", "policy.mean.weight", "policy.mean.bias"}
    assert not any(v for k, v in grads_of(model, ce).items() if k.startswith("policy."))
    plain = build("hard", 28, glimpses=4)
    deep = build("hard", 28, glimpses=4, policy_hidden=32)
    assert deep.cost()["macs"] - plain.cost()["macs"] == 3 * (256 * 32 + 32 * 2 - 256 * 2)  # 3 sampled steps
    with pytest.raises(ConfigError, match="policy_hidden=-1"):
        build("hard", 28, policy_hidden=-1)


def test_a_setting_shared_by_kinds_has_one_default():
    """The networks' constructors are the one place a default is written (GlimpseModel reads them):
    a setting two kinds share must default alike, or one kind would silently train with the other's."""
    import inspect

    from glimpse.models import AttentionNet, KINDS, defaults
    from glimpse.module import GlimpseModel

    class Other(KINDS["soft"]):
        def __init__(self, image_size: int, *, grid_stride: int = 5, **common):
            super().__init__(image_size, grid_stride=grid_stride, **common)

    with pytest.raises(ValueError, match="grid_stride=5, but another kind defaults it to 4"):
        defaults((AttentionNet, KINDS["soft"], Other))
    model = inspect.signature(GlimpseModel.__init__).parameters
    assert {k: v for k, v in defaults().items() if model[k].default != v} == {}


def test_cost_counts_pixels_read():
    hard = build("hard", 100, glimpses=8, patch=12, scales=4)
    assert hard.cost()["pixels"] == 8 * 4 * 12 * 12
    soft = build("soft", 100, glimpses=8, patch=12, scales=4, grid_stride=8)
    n = (100 - 12) // 8 + 1
    assert soft.cost()["pixels"] == n * n * 4 * 12 * 12
    assert soft.cost()["macs"] > hard.cost()["macs"]
    # As the canvas grows, hard reads the same pixels and soft reads more (the cost figure's claim).
    assert build("hard", 200, glimpses=8, patch=12, scales=4).cost()["pixels"] == hard.cost()["pixels"]
    assert build("soft", 200, glimpses=8, patch=12, scales=4, grid_stride=8).cost()["pixels"] > soft.cost()["pixels"]


@pytest.mark.parametrize(
    "kind, kwargs, name",
    [
        ("hard", dict(glimpses=0), "glimpses=0"),
        ("hard", dict(patch=30), "patch=30"),
        ("hard", dict(scales=0), "scales=0"),
        ("hard", dict(patch=12, scales=3), "scales=3"),  # a 48x48 widest patch on 28x28
        ("hard", dict(std=0.0), "std=0.0"),
        ("hard", dict(start="corner"), "start='corner'"),
        ("hard", dict(core="gru"), "core='gru'"),
        ("soft", dict(grid_stride=0), "grid_stride=0"),
        ("soft", dict(grid_stride=21), "grid_stride=21"),  # a 1x1 grid
        ("soft", dict(score="cosine"), "score='cosine'"),
        ("loud", dict(), "attention='loud'"),
    ],
)
def test_bad_settings_name_the_value(kind, kwargs, name):
    with pytest.raises(ConfigError, match=name):
        build(kind, 28, **kwargs)


def test_reinforce_term_does_not_train_the_baseline():
    """The advantage R - b_t must hold b_t constant: the policy term's gradient is -(R - b_t) / B
    for each log-probability and nothing for the baseline (which its squared error trains)."""
    from glimpse.losses import reinforce
    log_probs = torch.randn(4, 3, requires_grad=True)
    baselines = torch.rand(4, 3, requires_grad=True)
    reward = torch.tensor([1.0, 0.0, 1.0, 1.0])
    reinforce(log_probs, baselines, reward)["reinforce"].backward()
    assert baselines.grad is None or not baselines.grad.any()
    torch.testing.assert_close(log_probs.grad, -(reward[:, None] - baselines.detach()) / 4)


def test_log_probability_is_of_the_sample_before_clamping():
    """Near the border many samples fall outside [-1, 1] and are clamped; their log-probability
    must be of where they fell, which is further from the mean than the clamped location."""
    from torch.distributions import Normal

    from glimpse.models.parts import GaussianPolicy
    torch.manual_seed(0)
    policy = GaussianPolicy(8, std=0.5)
    with torch.no_grad():
        policy.mean.weight.zero_()
        policy.mean.bias.fill_(0.8)  # tanh(0.8) = 0.66: a third of the draws leave the image
    loc, log_prob, mean = policy(torch.rand(1000, 8))
    of_clamped = Normal(mean, 0.5).log_prob(loc).sum(-1)
    clamped = (loc.abs() == 1).any(-1)
    assert 100 < clamped.sum() < 900
    torch.testing.assert_close(log_prob[~clamped], of_clamped[~clamped])
    assert (log_prob[clamped] < of_clamped[clamped] - 1e-6).all()


def test_rollout_moves_every_tensor_and_keeps_the_missing_ones_missing():
    out = build("hard", 28, glimpses=2)(torch.rand(2, 1, 28, 28))
    moved = out.to(torch.float64)
    assert moved.logits.dtype == moved.log_probs.dtype == torch.float64 and moved.patches is None
    torch.testing.assert_close(moved.locations, out.locations.double())


@pytest.mark.parametrize("size, patch, scales, stride, kind", [
    (60, 12, 3, 4, "soft"),  # cluttered60: the widest scale reads between pooled cells (bilinear at 1/2)
    (100, 12, 4, 8, "soft"),  # cluttered100
    (28, 7, 1, 3, "soft"),  # odd patch: half-pixel margins
    (61, 11, 2, 4, "choice"),  # odd canvas, and the scorer's keys of detached features
])
def test_convolved_grid_features_equal_the_gathered_ones(size, patch, scales, stride, kind):
    """The fast form (strided convolutions over the pyramid) computes the definition (the sensor's
    patches at every grid location through the glimpse network): features, keys and gradients.
    In float64, so that float32 rounding cannot flip a rectifier near zero and with it a gradient;
    in float32 the features agree to 1e-5."""
    torch.manual_seed(0)
    net = build(kind, size, patch=patch, scales=scales, grid_stride=stride, glimpses=2, what=16, where=8,
                glimpse_features=24, attention_size=8)
    assert net.convolve
    images = torch.rand(3, 1, size, size)
    torch.testing.assert_close(net.convolved_features(images)[0], net.gathered_features(images), rtol=1e-4, atol=1e-5)
    net, images = net.double(), images.double()
    net.grid = location_grid(size, patch, stride)[0]  # exact: not float32 centres cast up
    f, keys = net.convolved_features(images)
    reference = net.gathered_features(images)
    torch.testing.assert_close(f, reference)
    torch.testing.assert_close(keys, net.scorer.key(reference))
    pull, params = torch.randn_like(f), [*net.glimpse.parameters(), *net.scorer.key.parameters()]
    reference_keys = net.scorer.key(reference.detach() if net.detach_scores else reference)
    grads = [torch.autograd.grad((out * pull).sum() + k.sum(), params)
             for out, k in ((f, keys), (reference, reference_keys))]
    torch.testing.assert_close(grads[0], grads[1])


def test_a_grid_stride_off_the_pooled_cells_uses_the_gathered_form():
    net = build("soft", 60, patch=12, scales=3, grid_stride=6)  # 6 pixels is 1.5 cells of the widest scale
    assert not net.convolve
    f, keys = net.features(torch.rand(2, 1, 60, 60))
    assert f.shape == (2, net.grid.shape[0], net.glimpse.out_features) and keys.shape[:2] == f.shape[:2]


@pytest.mark.parametrize("kind", ["soft", "choice"])
def test_the_blend_forms_the_features_gradient_once_and_equals_the_plain_product(kind, monkeypatch):
    """Blend keeps each step's (m_t, g_t) and forms f's gradient as one product; every parameter's
    gradient equals the plain per-step product's (float64, exact to rounding), and under bfloat16
    autocast to bfloat16 rounding. Choice's one-hot m_t goes through the same blend."""
    import glimpse.models.blend as blend

    torch.manual_seed(0)
    net = build(kind, 28, patch=8, scales=2, grid_stride=4, glimpses=3, what=16, where=8, glimpse_features=24,
                attention_size=8, core="lstm").double()
    images, pull = torch.rand(4, 1, 28, 28, dtype=torch.float64), torch.randn(4, 10, dtype=torch.float64)

    def grads(shared: bool, autocast: bool = False):
        monkeypatch.setattr(blend.Blend, "once", shared)
        torch.manual_seed(1)
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            out = net(images).logits
        return torch.autograd.grad((out.double() * pull).sum(), list(net.parameters()), allow_unused=True)

    plain, once = grads(False), grads(True)
    assert any(g is not None and g.abs().sum() > 0 for g in once)
    for p, o in zip(plain, once):
        assert (p is None) == (o is None)
        if p is not None:
            torch.testing.assert_close(o, p)
    net = net.float()
    images, pull = images.float(), pull.float()
    for p, o in zip(grads(False, True), grads(True, True)):
        if p is not None:
            torch.testing.assert_close(o, p, rtol=0.05, atol=0.05 * p.abs().max().item())


def test_the_additive_score_equals_its_definition_with_its_gradients():
    """The additive score runs as 2v . sigmoid(2(k + q)) + b - sum(v): equal to v . tanh(k + q) + b in
    value and in every gradient (float64, to rounding), so the faster form changes no result."""
    from glimpse.models.soft import Scorer

    torch.manual_seed(0)
    scorer = Scorer(6, 5, size=4, kind="additive").double()
    keys = torch.randn(3, 7, 4, dtype=torch.float64, requires_grad=True)
    h = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    pull = torch.randn(3, 7, dtype=torch.float64)
    inputs = [keys, h, *(p for name, p in scorer.named_parameters() if not name.startswith("key."))]  # keys given
    got, want = scorer(keys, h), scorer.definition(keys, h)
    assert got.shape == (3, 7) and got.abs().max() > 0.1
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad((got * pull).sum(), inputs), torch.autograd.grad((want * pull).sum(), inputs)):
        torch.testing.assert_close(g, w)
